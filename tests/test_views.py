"""Views created at run time: given files already in the bucket, a view created over them with POST /jobs is,
once the reconcile has backfilled it and the reducer has run, what DuckDB answers for the same SQL over the
same files; bad requests are 400s that say why; a dropped view goes, and its state an hour later."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import duckdb
import pytest

from chalicelib.engine import layout
from chalicelib.local.cli import main as tally
from chalicelib.local.datagen import write_rankings, write_uservisits
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings
from chalicelib.tables import load_tables

from .conftest import INPUT, STATE, http_api, scheduled_event

TABLES = load_tables("reducers")
DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "date": "DATE"}
VIEWS = {
    # an aggregation with a condition on its rows, a filtered aggregate and a condition on its groups
    "agg": ("SELECT countryCode AS country, count(*) AS visits, sum(adRevenue) FILTER (WHERE duration > 30) AS "
            "long_revenue, max(duration) AS longest FROM uservisits WHERE searchWord LIKE '%a%' "
            "GROUP BY countryCode HAVING count(*) > 3"),
    # a scan
    "scan": "SELECT pageURL, pageRank * 2 AS doubled FROM rankings WHERE pageRank BETWEEN 20 AND 60",
    # a tumbling window
    "monthly": ("SELECT date_trunc('month', visitDate) AS month, CASE WHEN duration >= 50 THEN 'long' ELSE 'short' "
                "END AS kind, sum(adRevenue) AS revenue FROM uservisits GROUP BY ALL"),
}


@pytest.fixture
def files(tmp_path):
    return {"uservisits": write_uservisits(tmp_path / "uservisits", 400 << 10, file_bytes=200 << 10, seed=3),
            "rankings": write_rankings(tmp_path / "rankings", 200 << 10, file_bytes=100 << 10, seed=4)}


@pytest.fixture
def landed(lambdas, uploads, files):
    """The files in the bucket, mapped for the jobs in code, before any view exists."""
    for table, paths in files.items():
        records = [uploads.put(TABLES[table].prefix + path.name, path.read_bytes()) for path in paths]
        lambdas.lambda_.invoke("map_object", uploads.event(*records))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return files


def duck(files) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    for name, paths in files.items():
        columns = {c: DUCK_TYPES.get(kind, kind.upper()) for c, kind in TABLES[name].format.columns.items()}
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv({[str(p) for p in paths]}, "
                           f"header=false, columns={columns}, delim=',', quote='')")
    return connection


def post(lambdas, body) -> tuple[int, dict]:
    response = lambdas.http.post("/jobs", headers={"Content-Type": "application/json"},
                                 body=body if isinstance(body, str) else json.dumps(body))
    return response.status_code, json.loads(response.body)


def rows(lambdas, job: str) -> list[dict]:
    found, cursor = [], None
    while True:
        response = lambdas.http.get(f"/jobs/{job}/results?limit=50" + (f"&cursor={cursor}" if cursor else ""))
        page = json.loads(response.body, parse_float=Decimal)
        found += page["rows"]
        if not (cursor := page["next_cursor"]):
            return found


def settle(runtime, job: str) -> None:
    runtime.reconciler.reconcile(runtime.jobs.get(job), grace=dt.timedelta(0))
    while runtime.reducer.reduce_job(runtime.jobs.get(job)).more_pending:
        pass


@pytest.mark.parametrize("name", VIEWS)
def test_a_view_created_after_its_data_is_what_duckdb_answers_for_the_same_sql_once_idle(
        name, runtime, lambdas, landed):
    sql = VIEWS[name]
    status, described = post(lambdas, {"name": name, "sql": sql})
    assert status == 201 and described["name"] == name and described["sql"] == sql
    assert name in [job["name"] for job in json.loads(lambdas.http.get("/jobs").body)["jobs"]]
    assert json.loads(lambdas.http.get(f"/jobs/{name}/status").body)["idle"] is False  # its data waits

    settle(runtime, name)

    assert json.loads(lambdas.http.get(f"/jobs/{name}/status").body)["idle"] is True
    expected = duck(landed).execute(sql)
    columns = [c[0] for c in expected.description]
    # The API writes dates and timestamps as ISO text.
    want = [{c: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v for c, v in zip(columns, row)}
            for row in expected.fetchall()]
    got = rows(lambdas, name)
    if name == "scan":
        assert sorted((r["pageURL"], r["doubled"]) for r in got) == sorted((r["pageURL"], r["doubled"]) for r in want)
        return
    keys = {"agg": ["country"], "monthly": ["month", "kind"]}[name]
    flattened = {tuple(r["key"][k] for k in keys): {**r["key"], **r["values"]} for r in got}
    assert flattened.keys() == {tuple(r[k] for k in keys) for r in want} and want
    for row in want:
        served = flattened[tuple(row[k] for k in keys)]
        for column, value in row.items():
            assert served[column] == value, (column, served, row)


@pytest.mark.parametrize("body, message", [
    ({"name": "v", "sql": "SELEC countryCode FROM uservisits"}, "cannot parse the SQL at line 1"),
    ({"name": "v", "sql": "SELECT pageURL FROM nowhere"}, "nowhere"),
    ({"name": "v", "sql": "SELECT nosuch, count(*) FROM uservisits GROUP BY 1"}, "nosuch"),
    ({"name": "v", "sql": "SELECT countryCode FROM uservisits u JOIN rankings r ON true"}, "JOIN"),
    ({"name": "bdb-agg-2a", "sql": "SELECT countryCode, count(*) FROM uservisits GROUP BY 1"}, "defined in code"),
    ({"name": "Bad Name", "sql": "SELECT countryCode, count(*) FROM uservisits GROUP BY 1"}, "name"),
    ({"name": "v"}, "sql"),
    ("not json", "body must be JSON"),
])
def test_a_view_that_cannot_be_created_is_a_400_that_says_why(runtime, lambdas, body, message):
    status, answer = post(lambdas, body)
    assert status == 400 and answer["error"] in ("InvalidQuery", "NameTaken"), answer
    assert message in answer["message"], answer
    assert list(runtime.state_store.list(layout.views_prefix())) == []


def test_a_name_already_taken_by_a_view_is_a_400(runtime, lambdas):
    body = {"name": "v", "sql": "SELECT countryCode, count(*) AS n FROM uservisits GROUP BY 1"}
    assert post(lambdas, body)[0] == 201
    status, answer = post(lambdas, {**body, "sql": "SELECT languageCode, count(*) FROM uservisits GROUP BY 1"})
    assert status == 400 and "exists already" in answer["message"]
    assert len(list(runtime.state_store.list(layout.views_prefix()))) == 1


def test_a_dropped_view_goes_at_once_and_its_state_once_the_grace_has_passed(runtime, lambdas, landed):
    sql = VIEWS["agg"]
    assert post(lambdas, {"name": "agg", "sql": sql})[0] == 201
    settle(runtime, "agg")
    assert rows(lambdas, "agg")

    response = lambdas.http.delete("/jobs/agg")
    assert response.status_code == 200 and json.loads(response.body)["dropped"] is True
    assert "agg" not in [job["name"] for job in json.loads(lambdas.http.get("/jobs").body)["jobs"]]
    assert lambdas.http.get("/jobs/agg/results").status_code == 404
    assert post(lambdas, {"name": "agg", "sql": sql})[0] == 400  # not while its old state is there
    runtime.reconciler.reconcile_all()
    assert list(runtime.state_store.list(layout.job_prefix("agg")))  # mappers may still know it: kept

    later = Runtime(runtime.settings, s3_client=runtime.client, clock=lambda: utc_now() + dt.timedelta(hours=2))
    later.reconciler.reconcile_all()
    assert list(runtime.state_store.list(layout.job_prefix("agg"))) == []
    assert post(lambdas, {"name": "agg", "sql": sql})[0] == 201  # the name is free again, and starts afresh


def test_jobs_in_code_cannot_be_dropped_and_unknown_ones_are_404(lambdas):
    assert lambdas.http.delete("/jobs/bdb-agg-2a").status_code == 400
    assert lambdas.http.delete("/jobs/nosuch").status_code == 404


def test_another_container_picks_a_new_view_up_once_its_catalog_is_a_refresh_old(runtime, lambdas, s3):
    other = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, api_auth="none", view_refresh_seconds=60),
                    s3_client=s3)
    now = [0.0]
    other.jobs.monotonic = lambda: now[0]
    assert "v" not in [job.name for job in other.jobs]
    assert post(lambdas, {"name": "v", "sql": "SELECT countryCode, count(*) AS n FROM uservisits GROUP BY 1"})[0] == 201

    now[0] = 59.0
    assert "v" not in [job.name for job in other.jobs]  # within a minute of its last listing
    now[0] = 61.0
    assert other.jobs.get("v").sql.startswith("SELECT countryCode")
    assert [job.name for job in other.jobs.for_key("uservisits/x.csv")][-1] == "v"


def test_tally_create_view_and_drop_view_through_the_api(runtime, lambdas, capsys):
    with http_api() as api:
        code = tally(["create-view", "by-lang", "--sql",
                      "SELECT languageCode, count(*) AS visits FROM uservisits GROUP BY 1", "--api", api])
        assert code == 0 and "created by-lang over uservisits/" in capsys.readouterr().out
        assert tally(["create-view", "by-lang", "--sql", "SELECT 1 FROM uservisits", "--api", api]) == 1
        assert "exists already" in capsys.readouterr().out
        assert tally(["drop-view", "by-lang", "--api", api]) == 0
        assert "dropped by-lang" in capsys.readouterr().out
    assert runtime.jobs.views.latest()["by-lang"].dropped is True


def test_a_collector_that_read_a_drop_before_the_name_was_taken_again_leaves_the_new_views_state(
        runtime, lambdas, landed):
    """Collector A finds the view dropped an hour ago; before it lists the view's state, collector B has deleted
    the old state, the name was taken again and the new view's first state written. A must not delete it."""
    from chalicelib.engine.views import LiveCatalog, ViewStore
    from chalicelib.jobs import Job

    from .faults import Before

    sql = VIEWS["agg"]
    assert post(lambdas, {"name": "agg", "sql": sql})[0] == 201
    settle(runtime, "agg")
    assert lambdas.http.delete("/jobs/agg").status_code == 200
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)

    def meanwhile():
        runtime.jobs.collect_dropped(dt.timedelta(hours=1), later)  # collector B
        assert post(lambdas, {"name": "agg", "sql": sql})[0] == 201
        settle(runtime, "agg")  # the new view's state

    racing = Before(runtime.state_store, meanwhile, operation="list", key_contains=layout.job_prefix("agg"))
    code = runtime.jobs.code
    collector_a = LiveCatalog(code, ViewStore(racing, utc_now), lambda name, text: Job.from_sql(name, text, TABLES))
    collector_a.collect_dropped(dt.timedelta(hours=1), later)

    assert racing.fired and list(runtime.state_store.list(layout.job_prefix("agg")))
    assert rows(lambdas, "agg") and json.loads(lambdas.http.get("/jobs/agg/status").body)["idle"] is True
