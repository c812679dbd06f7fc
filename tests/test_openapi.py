"""/openapi.json describes exactly the routes app.py declares: every route and method, every path parameter,
every query parameter a handler accepts. A route or a parameter added without its description fails here."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
from openapi_spec_validator import validate

from chalicelib import openapi
from chalicelib.engine import export
from chalicelib.engine.results import ResultsQuery
from chalicelib.engine.scan_results import ScanQuery

# The query parameters each route's handler accepts: ResultsQuery.from_params refuses any name that is not one of
# its fields, so a parameter added there (window_from, fresh, ...) must be documented too.
# The single-group route accepts `fresh` only (results.group_query_fresh).
# Scan jobs' results take ScanQuery's fields instead (engine/scan_results.py).
SCAN_ONLY = {f.name for f in dataclasses.fields(ScanQuery)} - {f.name for f in dataclasses.fields(ResultsQuery)}
ACCEPTED_QUERY = {"/jobs/{job}/results": {f.name for f in dataclasses.fields(ResultsQuery)} | SCAN_ONLY,
                  "/jobs/{job}/results/{key}": {"fresh"}, "/jobs/{job}/export": set(export.PARAMETERS)}
EXAMPLES = {"limit": "2", "order_by": "adRevenue", "desc": "true", "prefix": "1", "fresh": "true",
            "window_from": "2001-02-03", "window_to": "2001-02-04", "view": "files"}
# Parameters that only some jobs take, and a job that takes them.
JOB_FOR = {"window_from": "revenue-by-day", "window_to": "revenue-by-day", "view": "bdb-scan-1a"}


def declared_routes() -> dict[tuple[str, str], object]:
    import app

    return {(path, method.lower()): entry for path, methods in app.app.routes.items()
            for method, entry in methods.items()}


def documented(document: dict) -> dict[tuple[str, str], dict]:
    return {(path, verb): spec for path, item in document["paths"].items() for verb, spec in item.items()}


@pytest.fixture
def served(lambdas) -> dict:
    response = lambdas.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


def test_the_served_document_is_valid_openapi_3(served):
    validate(served)
    assert served["openapi"].startswith("3.")


@pytest.mark.parametrize("auth", ["iam", "api_key", "none"])
def test_each_stage_auth_gives_a_valid_document(auth):
    validate(openapi.document(auth))


def test_every_route_and_method_is_documented_and_nothing_else(served):
    assert set(documented(served)) == set(declared_routes())


def test_path_parameters_match_the_handlers_arguments(served):
    for (path, verb), entry in declared_routes().items():
        spec = documented(served)[(path, verb)]
        in_path = {p["name"] for p in spec.get("parameters", []) if p["in"] == "path"}
        assert in_path == set(entry.view_args) == set(re.findall(r"{(\w+)}", path)), path


def test_query_parameters_are_exactly_those_the_handlers_accept(served):
    for (path, verb) in declared_routes():
        spec = documented(served)[(path, verb)]
        in_query = {p["name"] for p in spec.get("parameters", []) if p["in"] == "query"}
        assert in_query == ACCEPTED_QUERY.get(path, set()), (
            f"{path}: document the query parameters its handler accepts in chalicelib/openapi.py")


def test_every_documented_results_parameter_is_accepted_and_others_are_refused(api):
    spec = documented(openapi.document("none"))[("/jobs/{job}/results", "get")]
    for parameter in (p["name"] for p in spec["parameters"] if p["in"] == "query"):
        if parameter == "cursor":
            continue  # needs a cursor from a previous page; covered by test_api
        assert parameter in EXAMPLES, f"add an example value for the new parameter {parameter!r} to EXAMPLES"
        response = api.get(f"/jobs/{JOB_FOR.get(parameter, 'bdb-agg-2a')}/results?{parameter}={EXAMPLES[parameter]}")
        assert response.status_code == 200, (parameter, response.body)
    assert api.get("/jobs/bdb-agg-2a/results?undocumented=1").status_code == 400


def test_api_routes_carry_the_stage_security_and_the_page_and_document_are_public():
    for auth, scheme in (("iam", "sigv4"), ("api_key", "api_key")):
        document = openapi.document(auth)
        assert document["security"] == [{scheme: []}]
        public = {path for (path, _), spec in documented(document).items() if spec.get("security") == []}
        assert public == {"/", "/openapi.json"}


@pytest.fixture
def api(lambdas, uploads):
    from .conftest import scheduled_event, uservisits_rows

    record = uploads.put("uservisits/a.csv", uservisits_rows(("1.2.3.4", "1.5"), ("5.6.7.8", "2.5")))
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return lambdas.http
