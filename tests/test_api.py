"""The HTTP API: given a merged result, these requests get these answers."""
from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import quote

import pytest

from .conftest import scheduled_event, uservisits_rows

IPS = [(f"{a}.{b}.{c}.1", f"{a * b + c}.{c:06d}") for a in (1, 12, 123) for b in (4, 45) for c in (7, 8)]


@pytest.fixture
def api(lambdas, uploads):
    record = uploads.put("uservisits/a.csv", uservisits_rows(*IPS))
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return lambdas.http


def get(http, path: str) -> tuple[int, dict]:
    response = http.get(path)
    return response.status_code, json.loads(response.body, parse_float=Decimal)


def expected_groups(length: int) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for ip, revenue in IPS:
        totals[ip[:length]] = totals.get(ip[:length], Decimal(0)) + Decimal(revenue)
    return totals


def walk(http, query: str) -> list[dict]:
    rows, cursor, pages = [], None, 0
    while True:
        status, body = get(http, f"/jobs/bdb-agg-2c/results?{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        rows += body["rows"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
        assert pages < 100


def test_jobs_lists_every_job_with_its_definition(api):
    status, body = get(api, "/jobs")
    assert status == 200
    jobs = {job["name"]: job for job in body["jobs"]}
    assert set(jobs) == {"bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "bdb-scan-1a", "bdb-scan-1b", "bdb-scan-1c",
                         "duration-histogram", "page-latency", "revenue-by-day", "visits-by-browser",
                         "visits-by-country"}
    revenue = jobs["revenue-by-day"]
    assert (revenue["language"], revenue["window_key"]) == ("sql", "window_start")
    assert revenue["sql"].startswith("SELECT time_bucket(INTERVAL '1 day', visitDate) AS window_start")
    assert jobs["visits-by-browser"]["map"] == "reducers.visits_by_browser.browser_family"
    assert jobs["bdb-agg-2a"]["keys"] == {"sourceIP_prefix": "substr(sourceIP, 1, 8)"}
    assert jobs["bdb-agg-2a"]["aggregates"] == {"adRevenue": "sum(adRevenue)"}
    assert jobs["bdb-agg-2a"]["kind"] == "aggregation" and jobs["bdb-scan-1a"]["kind"] == "scan"
    assert jobs["bdb-scan-1a"]["select"] == {"pageURL": "pageURL", "pageRank": "pageRank"}


def test_results_are_every_group_with_exact_sums(api):
    status, body = get(api, "/jobs/bdb-agg-2a/results")
    assert status == 200 and body["next_cursor"] is None
    assert {r["key"]["sourceIP_prefix"]: r["values"]["adRevenue"] for r in body["rows"]} == expected_groups(8)


def test_cursor_pages_walk_every_group_exactly_once_in_key_order(api):
    rows = walk(api, "limit=2")
    keys = [r["key"]["sourceIP_prefix"] for r in rows]
    assert keys == sorted(expected_groups(12))


def test_order_by_an_aggregate_descending_pages_consistently(api):
    rows = walk(api, "limit=3&order_by=adRevenue&desc=true")
    values = [r["values"]["adRevenue"] for r in rows]
    assert values == sorted(expected_groups(12).values(), reverse=True)
    assert len({r["key"]["sourceIP_prefix"] for r in rows}) == len(expected_groups(12))


def test_prefix_filters_on_the_string_key(api):
    rows = walk(api, "limit=1&prefix=12.")
    assert {r["key"]["sourceIP_prefix"] for r in rows} == {k for k in expected_groups(12) if k.startswith("12.")}


def test_limit_is_capped(api):
    status, body = get(api, "/jobs/bdb-agg-2c/results?limit=100000")
    assert status == 200 and len(body["rows"]) == len(expected_groups(12))


def test_one_group_by_key(api):
    status, body = get(api, f"/jobs/bdb-agg-2a/results/{quote('123.45.7', safe='')}")
    assert status == 200
    assert body == {"key": {"sourceIP_prefix": "123.45.7"}, "values": {"adRevenue": expected_groups(8)["123.45.7"]}}


def test_status_reports_progress_and_idle(api):
    status, body = get(api, "/jobs/bdb-agg-2a/status")
    assert status == 200
    assert body["idle"] is True
    assert body["objects"] == {"landed": 1, "seen": 1, "mapped": 1, "merged": 1, "quarantined": 0, "waiting": 0,
                               "to_retract": 0}
    assert body["rows"] == len(expected_groups(8)) and body["partials_pending"] == 0
    assert body["last_reduce_at"] is not None


@pytest.mark.parametrize("path, status_code, message", [
    ("/jobs/nope/results", 404, "no job named 'nope'"),
    ("/jobs/nope/status", 404, "no job named 'nope'"),
    ("/jobs/bdb-agg-2a/results/9.9.9.9", 404, "no group"),
    ("/jobs/bdb-agg-2a/results?limit=ten", 400, "limit must be an integer"),
    ("/jobs/bdb-agg-2a/results?limit=0", 400, "limit must be at least 1"),
    ("/jobs/bdb-agg-2a/results?order_by=nope", 400, "order_by must be one of"),
    ("/jobs/bdb-agg-2a/results?desc=maybe", 400, "desc must be true or false"),
    ("/jobs/bdb-agg-2a/results?cursor=garbage", 400, "cursor"),
    ("/jobs/bdb-agg-2a/results?colour=red", 400, "unknown parameter"),
    ("/jobs/page-latency/results/GET", 400, "JSON array"),
])
def test_bad_requests_get_a_4xx_with_a_message(api, path, status_code, message):
    status, body = get(api, path)
    assert status == status_code
    assert message in body["message"] and body["error"]


def test_a_cursor_is_refused_by_a_query_with_other_parameters(api):
    _, first = get(api, "/jobs/bdb-agg-2c/results?limit=1&order_by=adRevenue")
    status, body = get(api, f"/jobs/bdb-agg-2c/results?limit=1&cursor={first['next_cursor']}")
    assert status == 400 and "other order_by" in body["message"]


def test_a_job_with_no_data_yet_serves_an_empty_result(lambdas):
    status, body = get(lambdas.http, "/jobs/page-latency/results")
    assert status == 200 and body["rows"] == [] and body["next_cursor"] is None
    status, body = get(lambdas.http, "/jobs/page-latency/status")
    assert body["idle"] is True and body["generation"] is None


def test_multi_key_groups_are_addressed_by_a_json_array(lambdas, uploads):
    line = {"ts": "2026-01-01 00:00:00", "method": "get", "path": "/a b", "status": 200, "latency_ms": 1.0, "bytes": 3}
    record = uploads.put("requests/x.jsonl", json.dumps(line) + "\n")
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())

    status, body = get(lambdas.http, "/jobs/page-latency/results/" + quote(json.dumps(["/a b", "GET"]), safe=""))
    assert status == 200 and body["values"]["requests"] == 1


def rows_of(http, job: str, query: str = "") -> dict:
    status, body = get(http, f"/jobs/{job}/results?limit=1000{query}")
    assert status == 200, body
    return {tuple(row["key"].values()): row["values"] for row in body["rows"]}


def test_fresh_results_include_partials_mapped_since_the_last_reducer_run(api, lambdas, runtime, uploads):
    before = rows_of(api, "bdb-agg-2a")
    lambdas.lambda_.invoke("map_object", uploads.event(
        uploads.put("uservisits/b.csv", uservisits_rows(("250.1.1.1", "7.5"), ("1.4.7.1", "1"))),
        uploads.delete("uservisits/a.csv")))
    state = sorted(o.key for o in runtime.state_store.list(""))

    fresh = rows_of(api, "bdb-agg-2a", "&fresh=true")

    assert rows_of(api, "bdb-agg-2a") == before  # what the last reducer run committed
    assert fresh == {("250.1.1.",): {"adRevenue": Decimal("7.5")}, ("1.4.7.1",): {"adRevenue": Decimal("1")}}
    assert get(api, "/jobs/bdb-agg-2a/results/250.1.1.?fresh=1") == (
        200, {"key": {"sourceIP_prefix": "250.1.1."}, "values": {"adRevenue": Decimal("7.5")}})
    assert sorted(o.key for o in runtime.state_store.list("")) == state  # a fresh read writes nothing
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    assert rows_of(api, "bdb-agg-2a") == fresh


def test_fresh_results_of_min_max_rebuild_from_retained_partials(lambdas, uploads):
    def requests(*rows):
        return "".join(json.dumps({"ts": "2026-01-01 10:00:00", "method": "get", "path": p, "status": 200,
                                   "latency_ms": ms, "bytes": 1}) + "\n" for p, ms in rows)
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("requests/a.jsonl", requests(("/", 90.0)))))
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("requests/b.jsonl", requests(("/", 10.0)))))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.delete("requests/a.jsonl")))

    assert rows_of(lambdas.http, "page-latency")[("/", "GET")]["max_latency_ms"] == 90.0
    assert rows_of(lambdas.http, "page-latency", "&fresh=true")[("/", "GET")]["max_latency_ms"] == 10.0


@pytest.mark.parametrize("path", ["/jobs/bdb-agg-2a/results?fresh=maybe", "/jobs/bdb-agg-2a/results/1.4.7.1?x=1"])
def test_bad_fresh_and_unknown_group_parameters_are_400(api, path):
    status, body = get(api, path)
    assert status == 400 and body["message"]
