"""Event-time tumbling windows: against DuckDB's date_trunc / time_bucket, late data, and the API's window range."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from chalicelib.jobs import CsvFormat, Job

from .conftest import scheduled_event

START = dt.datetime(2024, 3, 30, 22, 0)


def events(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 9 * 24 * 3600, rows)  # nine days, across a month end
    return pa.table({
        "ts": pa.array([START + dt.timedelta(seconds=int(s)) for s in seconds], pa.timestamp("us")),
        "country": pa.array(rng.choice(["USA", "FRA", "JPN"], rows)),
        "amount": pa.array([Decimal(int(c)) / 100 for c in rng.integers(0, 100_000, rows)], pa.decimal128(18, 2)),
    })


def window_job(size: str) -> Job:
    return Job(name="w", prefix="p/", format=CsvFormat(columns={"ts": "timestamp", "country": "string",
                                                                "amount": "decimal(18,2)"}),
               window={"column": "ts", "size": size}, keys={"country": "country"},
               aggregates={"revenue": "sum(amount)", "n": "count()"})


@pytest.mark.parametrize("size, bucket", [
    ("1h", "date_trunc('hour', ts)"),
    ("1d", "date_trunc('day', ts)"),
    ("1w", "date_trunc('week', ts)"),
    ("1mo", "date_trunc('month', ts)"),
    ("15m", "time_bucket(INTERVAL 15 MINUTE, ts, TIMESTAMP '1970-01-01')"),
    ("2d", "time_bucket(INTERVAL 2 DAY, ts, TIMESTAMP '1970-01-01')"),
])
def test_windows_equal_duckdb_group_by_the_truncated_time(size, bucket):
    plan = window_job(size).plan
    table = events(3000, seed=len(size))
    result = plan.finalize(plan.merge([plan.lift(table.slice(i, 700)) for i in range(0, 3000, 700)]))
    got = {(r["window_start"], r["country"]): (r["revenue"], r["n"]) for r in result.to_pylist()}
    con = duckdb.connect()
    con.register("events", table)
    want = {(w, c): (s, n) for w, c, s, n in con.execute(
        f"SELECT {bucket} AS w, country, SUM(amount), COUNT(*) FROM events GROUP BY w, country").fetchall()}
    assert got == want


def test_late_rows_merge_into_their_window():
    plan = window_job("1h").plan
    early = pa.table({"ts": pa.array([START, START + dt.timedelta(hours=5)], pa.timestamp("us")),
                      "country": ["USA", "USA"], "amount": pa.array([Decimal("1.00")] * 2, pa.decimal128(18, 2))})
    late = early.slice(0, 1)  # arrives after the 05:00 window, belongs to 22:00
    result = plan.finalize(plan.merge([plan.lift(early), plan.lift(late)])).sort_by("window_start").to_pylist()
    assert [(r["window_start"], r["n"]) for r in result] == [(START, 2), (START + dt.timedelta(hours=5), 1)]


@pytest.mark.parametrize("window, problem", [
    ({"column": "ts", "size": "1x"}, "is not a positive count and a unit"),
    ({"column": "ts", "size": "0h"}, "is not a positive count and a unit"),
    ({"column": "country", "size": "1h"}, "not a date or timestamp"),
    ({"column": "nope", "size": "1h"}, "is not a column"),
])
def test_a_bad_window_fails_validation_naming_the_problem(window, problem):
    with pytest.raises(ValueError) as caught:
        Job(**{**window_job("1h").model_dump(exclude={"window", "map"}), "window": window})
    assert problem in str(caught.value)


def test_sub_day_windows_need_timestamps_not_dates():
    with pytest.raises(ValueError, match="need a timestamp column"):
        Job(name="d", prefix="p/", format=CsvFormat(columns={"day": "date", "v": "int64"}),
            window={"column": "day", "size": "1h"}, keys={"v": "v"}, aggregates={"n": "count()"})


# --- the API's window range on revenue-by-day ---------------------------------------------------------------

ROWS = [("1.1.1.1", "2001-02-03", "1.5", "USA"), ("1.1.1.2", "2001-02-03", "2.5", "USA"),
        ("1.1.1.3", "2001-02-04", "4", "FRA"), ("1.1.1.4", "2001-02-05", "8", "USA")]


@pytest.fixture
def days(lambdas, uploads):
    body = "".join(f"{ip},http://x/,{day},{revenue},Mozilla/5.0,{country},{country}-EN,word,10\n"
                   for ip, day, revenue, country in ROWS)
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("uservisits/days.csv", body)))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return lambdas.http


def rows(http, query: str) -> tuple[int, dict]:
    response = http.get("/jobs/revenue-by-day/results" + query)
    return response.status_code, json.loads(response.body, parse_float=Decimal)


def test_revenue_by_day_serves_a_row_per_window_and_country(days):
    status, body = rows(days, "")
    assert status == 200
    assert [(r["key"]["window_start"], r["key"]["countryCode"], r["values"]["revenue"]) for r in body["rows"]] == [
        ("2001-02-03", "USA", Decimal("4")), ("2001-02-04", "FRA", Decimal("4")), ("2001-02-05", "USA", Decimal("8"))]


def test_window_from_is_inclusive_and_window_to_exclusive(days):
    status, body = rows(days, "?window_from=2001-02-04&window_to=2001-02-05")
    assert status == 200 and [r["key"]["window_start"] for r in body["rows"]] == ["2001-02-04"]
    _, first = rows(days, "?window_from=2001-02-03&limit=1")
    status, second = rows(days, f"?window_from=2001-02-03&limit=1&cursor={first['next_cursor']}")
    assert status == 200 and second["rows"][0]["key"]["window_start"] == "2001-02-04"
    status, other = rows(days, f"?window_from=2001-02-04&limit=1&cursor={first['next_cursor']}")
    assert status == 400 and "window" in other["message"]


@pytest.mark.parametrize("path, message", [
    ("/jobs/revenue-by-day/results?window_from=yesterday", "must be an ISO date"),
    ("/jobs/bdb-agg-2a/results?window_from=2001-02-03", "needs a job with a window"),
    ("/jobs/visits-by-country/results?order_by=top_words", "has no order"),
])
def test_bad_window_or_order_parameters_are_400s(days, path, message):
    response = days.get(path)
    assert response.status_code == 400 and message in json.loads(response.body)["message"]


def test_visits_by_country_serves_json_numbers_and_top_k_lists(days):
    response = days.get("/jobs/visits-by-country/results/USA")
    body = json.loads(response.body)
    assert response.status_code == 200
    assert body["values"] == {"visitors": 3, "p95_duration": 10.0, "revenue_stddev": pytest.approx(3.5, rel=1e-12),
                              "top_words": [{"value": "word", "count": 3}]}
