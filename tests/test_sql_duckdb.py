"""Every SQL job, shipped or not, served by the real engine (moto S3, the Lambdas' handlers) over generated files
equals what DuckDB answers for the very same SQL text over the very same files: exactly for exact aggregates
(floats to the rounding of a different summation order), and within the stated bound for sketches
(count(DISTINCT) and approx_count_distinct: HLL; percentile_*: KLL rank; top_k: frequent-items counts)."""
from __future__ import annotations

import datetime as dt
import json
import math
import random
from decimal import Decimal
from pathlib import Path

import datasketches as ds
import duckdb
import pytest

from chalicelib.aggregation.sketches import ApproxDistinct, ApproxQuantile, TopK
from chalicelib.jobs import Job, JobCatalog, load_jobs
from chalicelib.local.datagen import write_rankings, write_uservisits
from chalicelib.tables import load_tables

from .conftest import scheduled_event

TABLES = load_tables("reducers")
# Relative error of count(DISTINCT) (HLL, lg_k 12) at three standard errors: 99.7 % of answers are within it.
HLL_BOUND = 3 * 1.04 / math.sqrt(2 ** 12)
KLL_RANK_ERROR = ds.kll_doubles_sketch.get_normalized_rank_error(200, False)  # 1.33 %, 99 % confidence
TOP_K_ERROR = ds.frequent_strings_sketch.get_epsilon_for_lg_size(10)  # of the group's rows

# Jobs beyond the shipped ones, for the constructs those do not use.
EXTRA = {
    "sql-monthly": """
        SELECT countryCode, date_trunc('month', visitDate) AS month, count(*) AS visits,
               count(*) FILTER (WHERE duration > 50) AS long_visits,
               sum(adRevenue) FILTER (WHERE searchWord LIKE 'a%') AS a_revenue,
               min(duration) AS shortest, max(adRevenue) AS top, avg(duration) AS mean_duration,
               var_pop(duration) AS spread
        FROM uservisits
        WHERE visitDate BETWEEN '1990-01-01' AND '1999-12-31' AND countryCode IN ('USA', 'FRA', 'DEU', 'JPN')
        GROUP BY ALL
        HAVING count(*) > 2 AND long_visits >= 1
    """,
    "sql-agents": """
        SELECT CASE WHEN userAgent LIKE '%bot%' THEN 'bot' WHEN userAgent ILIKE '%MSIE%' THEN 'ie'
                    ELSE 'other' END AS family,
               upper(substr(languageCode, 5)) AS lang, count(*) AS visits, sum(duration) AS seconds,
               stddev_pop(adRevenue) AS revenue_spread, approx_count_distinct(countryCode) AS countries
        FROM uservisits
        GROUP BY 1, 2
    """,
    "sql-long-visits": """
        SELECT sourceIP, CAST(adRevenue AS DOUBLE) * 2 AS double_revenue, extract(year FROM visitDate) AS year,
               concat(countryCode, '/', languageCode) AS locale, duration // 10 AS tens
        FROM uservisits
        WHERE duration >= 95 AND NOT (countryCode = 'USA')
    """,
    "sql-hourly": """
        SELECT date_trunc('hour', ts) AS hour, lower(method) AS method, count(*) AS requests,
               count(latency_ms) AS timed, avg(latency_ms) AS mean_latency,
               sum(bytes) FILTER (WHERE status < 400) AS ok_bytes, count(DISTINCT path) AS paths
        FROM requests
        WHERE path NOT LIKE '/static/%'
        GROUP BY ALL
    """,
}
DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "float64": "DOUBLE", "date": "DATE", "timestamp": "TIMESTAMP"}
# DuckDB has no top_k: the same text runs there with the exact answer under that name.
TOP_K_MACRO = """CREATE MACRO top_k(x, k) AS list_transform(
    list_slice(list_sort(list_transform(map_entries(histogram(x)), lambda e: {'c': -CAST(e.value AS BIGINT), 'v': e.key})), 1, k),
    lambda e: {'value': e.v, 'count': -e.c})"""


def write_requests(directory: Path, files: int, rows: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    paths = []
    for index in range(files):
        lines = []
        for _ in range(rows):
            row = {"ts": (dt.datetime(2024, 3, 30, 20) + dt.timedelta(seconds=rng.randrange(9 * 3600))).isoformat(" "),
                   "method": rng.choice(["get", "GET", "post", "Put", None]),
                   "path": rng.choice(["/", "/a", "/b/c", "/static/x.js", "/static/y.css", None]),
                   "status": rng.choice([200, 200, 200, 304, 404, 500, None]),
                   "latency_ms": rng.choice([None, round(rng.uniform(0.5, 900), 3)]),
                   "bytes": rng.choice([None, rng.randrange(0, 50_000)])}
            lines.append(json.dumps(row))
        path = directory / f"part-{index}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("sql")
    return {"uservisits": write_uservisits(root / "uservisits", 3 << 20, file_bytes=1 << 20, seed=17),
            "rankings": write_rankings(root / "rankings", 1 << 20, file_bytes=512 << 10, seed=18),
            "requests": write_requests(root / "requests", 2, 1500, seed=19)}


@pytest.fixture(scope="module")
def duck(files) -> duckdb.DuckDBPyConnection:
    """DuckDB with a view per table over the same files, typed as the table declares."""
    connection = duckdb.connect()
    for name, table in TABLES.items():
        columns = {column: DUCK_TYPES.get(kind, kind.upper()) for column, kind in table.format.columns.items()}
        paths = [str(p) for p in files[name]]
        if table.format.kind == "csv":
            source = f"read_csv({paths}, header=false, columns={columns}, delim=',', quote='')"
        else:
            source = f"read_json({paths}, format='newline_delimited', columns={columns})"
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM {source}")
    connection.execute(TOP_K_MACRO)
    return connection


def sql_jobs() -> list[Job]:
    shipped = [job for job in load_jobs("reducers") if job.sql is not None]
    return shipped + [Job.from_sql(name, sql, TABLES) for name, sql in EXTRA.items()]


@pytest.fixture
def served(runtime, lambdas, uploads, files):
    jobs = sql_jobs()
    runtime.__dict__["jobs"] = JobCatalog(jobs)  # before the mapper and reducer are built
    for name, paths in files.items():
        records = [uploads.put(f"{TABLES[name].prefix}{p.name}", p.read_bytes()) for p in paths]
        lambdas.lambda_.invoke("map_object", uploads.event(*records))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return lambdas.http, jobs


def all_rows(http, job: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        response = http.get(f"/jobs/{job}/results?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.body
        page = json.loads(response.body, parse_float=Decimal)
        rows += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(rows) == page["total_rows"]
            return rows


def plain(value):
    """A DuckDB value as the API serves it in JSON."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def equal(served, expected) -> bool:
    if isinstance(expected, float) or isinstance(served, float):
        return served is not None and expected is not None and math.isclose(float(served), float(expected),
                                                                              rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, (int, Decimal)) and isinstance(served, (int, Decimal)):
        return Decimal(served) == Decimal(expected)
    return served == expected


def test_every_sql_job_serves_what_duckdb_answers_for_its_text(served, duck):
    http, jobs = served
    assert {job.name for job in jobs} >= {"bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "bdb-scan-1a", "bdb-scan-1b",
                                          "bdb-scan-1c", "revenue-by-day", "visits-by-country", "page-latency"}
    for job in jobs:
        result = duck.execute(job.sql)
        names = [column[0] for column in result.description]
        expected = [dict(zip(names, map(plain, row))) for row in result.fetchall()]
        if job.is_scan:
            assert_rows(job, all_rows(http, job.name), expected)
            continue
        assert_groups(job, all_rows(http, job.name), expected, duck)


def assert_rows(job: Job, rows: list[dict], expected: list[dict]) -> None:
    """A scan's output is a multiset of rows: both sides in one order (by their columns that are not floats),
    then row by row."""
    exact_columns = [name for name, value in (expected[0] if expected else {}).items() if not isinstance(value, float)]

    def order(row: dict) -> tuple:
        return tuple(str(row[name]) for name in exact_columns)

    assert len(rows) == len(expected), job.name
    for got, want in zip(sorted(rows, key=order), sorted(expected, key=order)):
        assert list(got) == list(want) and all(equal(got[k], want[k]) for k in want), (job.name, got, want)


def assert_groups(job: Job, rows: list[dict], expected: list[dict], duck) -> None:
    keys = job.plan.key_names
    want = {tuple(row[k] for k in keys): row for row in expected}
    got = {tuple(row["key"][k] for k in keys): row for row in rows}
    assert set(got) == set(want), (job.name, sorted(set(got) ^ set(want), key=str)[:5])
    assert all(list(row["key"]) == keys for row in rows)
    assert all(list(row["values"]) == list(job.aggregates) for row in rows)  # SELECT order
    sketches = {spec.out: spec.function for spec in job.plan.aggregates}
    for group, row in got.items():
        for name, value in row["values"].items():
            exact = want[group][name]
            function = sketches[name]
            if isinstance(function, ApproxDistinct):
                assert abs(value - exact) <= HLL_BOUND * exact, (job.name, group, name, value, exact)
            elif isinstance(function, ApproxQuantile):
                assert_rank_within_bound(duck, job, group, function.q, value)
            elif isinstance(function, TopK):
                assert_top_counts_within_bound(duck, job, group, value, exact)
            else:
                assert equal(value, exact), (job.name, group, name, value, exact)


def assert_rank_within_bound(duck, job: Job, group: tuple, q: float, value) -> None:
    """KLL's guarantee: the answer's rank among the group's values is within KLL_RANK_ERROR of q."""
    assert job.name == "visits-by-country"
    below, at_or_below, n = duck.execute(
        "SELECT count(*) FILTER (WHERE duration < ?), count(*) FILTER (WHERE duration <= ?), count(duration) "
        "FROM uservisits WHERE countryCode = ?", [value, value, group[0]]).fetchone()
    assert below / n - KLL_RANK_ERROR <= q <= at_or_below / n + KLL_RANK_ERROR, (group, value, below, n)


def assert_top_counts_within_bound(duck, job: Job, group: tuple, served: list[dict], exact: list[dict]) -> None:
    """Each count within TOP_K_ERROR of the group's rows of its exact count, and no value far below the
    exact k-th."""
    assert job.name == "visits-by-country"
    counts, rows = duck.execute("SELECT histogram(searchWord), count(*) FROM uservisits WHERE countryCode = ?",
                                [group[0]]).fetchone()
    bound = TOP_K_ERROR * rows
    assert len(served) == len(exact)
    for item in served:
        assert abs(item["count"] - counts[item["value"]]) <= bound, (group, item, counts[item["value"]])
        assert counts[item["value"]] >= exact[-1]["count"] - 2 * bound


def test_a_window_key_named_by_the_job_takes_window_from_and_window_to(served, duck):
    http, _ = served
    response = http.get("/jobs/sql-hourly/results?limit=1000&window_from=2024-03-31T01:00:00"
                        "&window_to=2024-03-31T03:00:00")
    assert response.status_code == 200, response.body
    hours = {row["key"]["hour"] for row in json.loads(response.body)["rows"]}
    assert hours == {"2024-03-31T01:00:00", "2024-03-31T02:00:00"}
    expected = duck.execute(f"SELECT count(*) FROM ({EXTRA['sql-hourly']}) WHERE hour >= '2024-03-31 01:00' "
                            "AND hour < '2024-03-31 03:00'").fetchone()[0]
    assert json.loads(response.body)["total_rows"] == expected
