"""Exports (GET /jobs/{job}/export): the file behind the presigned URL, read by DuckDB and pandas, holds exactly
the rows /results serves; it is written once per generation; older generations' exports go through garbage
records and the collector's grace, never at once; and the API's records can delete nothing but exports.

On moto's server: a presigned URL is fetched with a plain HTTP GET, as a user's tool would."""
from __future__ import annotations

import datetime as dt
import json
import urllib.request
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from chalicelib.api import to_json
from chalicelib.engine import export, layout
from chalicelib.engine.export import URL_LIFETIME, Exporter
from chalicelib.errors import InvalidSettings
from chalicelib.settings import Settings

from .conftest import STATE, collect_garbage, rankings_rows, scheduled_event
from .faults import Before

ROOT = Path(__file__).resolve().parent.parent
COUNTRIES, WORDS = ["USA", "DEU", "FRA"], ["tea", "ski", "sun", "jam", "owl", "fig", "elk"]
AGENTS = ["Mozilla/5.0 (Firefox)", "Opera/9.80", "Mozilla/4.0 (MSIE 6.0)", "Googlebot/2.1"]


def uservisits(n: int, seed: int = 0) -> str:
    """Varied uservisits rows: several countries, days, words, durations; revenue with six decimals."""
    return "".join(
        f"{i % 7}.{i % 5}.{seed}.{i},http://x/{i},2001-02-0{1 + i % 3},{i * 37 % 1000}.{i * 7919 % 10**6:06d},"
        f"{AGENTS[i % 4]},{COUNTRIES[i % 3]},{COUNTRIES[i % 3]}-EN,{WORDS[i * i % 7]},{i * 13 % 120}\n"
        for i in range(n))


@pytest.fixture
def tally(s3_server, lambdas, uploads):
    """Two objects mapped and merged: generation 1 of every uservisits job."""
    put(lambdas, uploads, "uservisits/a.csv", uservisits(60))
    put(lambdas, uploads, "uservisits/b.csv", uservisits(40, seed=1))
    reduce(lambdas)
    return lambdas


def put(lambdas, uploads, key: str, body: str) -> None:
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put(key, body)))


def reduce(lambdas) -> None:
    lambdas.lambda_.invoke("reduce_results", scheduled_event())


def get(lambdas, path: str) -> tuple[int, dict]:
    response = lambdas.http.get(path)
    return response.status_code, json.loads(response.body, parse_float=Decimal)


def served(lambdas, job: str) -> list[dict]:
    """Every row /results serves, paged in its default order, as flat dicts (key columns, then values)."""
    rows, cursor = [], None
    while True:
        status, page = get(lambdas, f"/jobs/{job}/results?limit=7" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        rows += [{**row["key"], **row["values"]} if "key" in row else row for row in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def exported(lambdas, job: str, fmt: str, tmp_path: Path) -> tuple[dict, Path]:
    status, body = get(lambdas, f"/jobs/{job}/export?format={fmt}")
    assert status == 200, body
    path = tmp_path / f"{job}.{fmt}"
    with urllib.request.urlopen(body["url"]) as response:  # no credentials: the URL is the permission
        path.write_bytes(response.read())
    return body, path


def as_served(rows: list[dict]) -> list[dict]:
    """Rows as the API writes them: what /results would serve for these values."""
    return json.loads(to_json(rows), parse_float=Decimal)


JOBS = ["bdb-agg-2a", "revenue-by-day", "visits-by-country", "duration-histogram", "visits-by-browser"]


@pytest.mark.parametrize("job", JOBS)
def test_a_parquet_export_read_by_duckdb_is_exactly_what_results_serves(tally, job, tmp_path):
    body, path = exported(tally, job, "parquet", tmp_path)
    relation = duckdb.read_parquet(str(path))
    rows = [dict(zip(relation.columns, values)) for values in relation.fetchall()]
    expected = served(tally, job)
    assert len(expected) > 2 and body["rows"] == len(expected)
    assert as_served(rows) == expected  # same rows, same order, same columns in the same order
    assert list(rows[0]) == list(expected[0])
    assert body["generation"] == 1 and body["format"] == "parquet"
    types = dict(zip(relation.columns, map(str, relation.types)))
    assert {"bdb-agg-2a": {"adRevenue": "DECIMAL(38,6)"},
            "revenue-by-day": {"window_start": "DATE", "revenue": "DECIMAL(38,6)"},
            "visits-by-country": {"top_words": "STRUCT(\"value\" VARCHAR, count BIGINT)[]",
                                  "p95_duration": "DOUBLE"},
            "duration-histogram": {"duration_histogram": "BIGINT[]"},
            "visits-by-browser": {"revenue": "DECIMAL(38,6)", "visits": "BIGINT"}}[job].items() <= types.items()


@pytest.mark.parametrize("job", ["bdb-agg-2a", "revenue-by-day", "visits-by-country", "duration-histogram"])
def test_a_csv_export_has_every_digit_iso_dates_and_nested_values_as_json(tally, job, tmp_path):
    body, path = exported(tally, job, "csv", tmp_path)
    expected = served(tally, job)
    relation = duckdb.read_csv(str(path), header=True, all_varchar=True)
    assert relation.columns == list(expected[0])
    rows = relation.fetchall()
    assert body["rows"] == len(rows) == len(expected) and body["format"] == "csv"
    for cells, want in zip(rows, expected):
        for cell, (name, value) in zip(cells, want.items()):
            if isinstance(value, (list, dict)):
                assert json.loads(cell, parse_float=Decimal) == value, name  # nested: JSON text
            elif isinstance(value, Decimal):
                assert cell == str(value) and Decimal(cell) == value, name  # every digit, as served
            else:
                assert cell == (None if value is None else str(value)), name
    # DuckDB reads it typed when told the types; pandas reads it too.
    if job == "bdb-agg-2a":
        typed = duckdb.read_csv(str(path), header=True, dtype={"adRevenue": "DECIMAL(38,6)"}).fetchall()
        assert [dict(zip(["sourceIP_prefix", "adRevenue"], r)) for r in typed] == expected
        import pandas

        frame = pandas.read_csv(path, dtype=str)
        assert list(frame["adRevenue"]) == [str(r["adRevenue"]) for r in expected]


def test_a_scan_jobs_export_is_its_output_rows_in_served_order(s3_server, lambdas, uploads, tmp_path):
    put(lambdas, uploads, "rankings/b.csv", rankings_rows(*[(f"b{i}.com", 900 + i * 37) for i in range(30)]))
    put(lambdas, uploads, "rankings/a.csv", rankings_rows(*[(f"a{i}.com", 1500 - i * 50) for i in range(30)]))
    reduce(lambdas)
    expected = served(lambdas, "bdb-scan-1a")
    assert len(expected) > 20
    body, path = exported(lambdas, "bdb-scan-1a", "parquet", tmp_path)
    relation = duckdb.read_parquet(str(path))
    assert [dict(zip(relation.columns, r)) for r in relation.fetchall()] == expected
    assert body["rows"] == len(expected) and body["generation"] == 1
    import pandas

    frame = pandas.read_parquet(body["url"])  # straight from the URL, as a notebook would
    assert frame.to_dict("records") == expected
    body, path = exported(lambdas, "bdb-scan-1a", "csv", tmp_path)
    assert [dict(zip(["pageURL", "pageRank"], r)) for r in duckdb.read_csv(str(path), header=True).fetchall()] \
        == expected


def test_an_export_before_any_commit_is_an_empty_file_with_the_columns(s3_server, lambdas, tmp_path):
    body, path = exported(lambdas, "revenue-by-day", "parquet", tmp_path)
    relation = duckdb.read_parquet(str(path))
    assert body["rows"] == 0 and body["generation"] is None and relation.fetchall() == []
    assert relation.columns == ["window_start", "countryCode", "revenue"]


def test_a_second_export_of_the_same_generation_finds_the_file_and_does_not_rewrite_it(tally, runtime, s3_server,
                                                                                      s3_clock, tmp_path):
    first, _ = exported(tally, "visits-by-country", "parquet", tmp_path)
    [stored] = [o for o in runtime.state_store.list("exports/visits-by-country/")]
    s3_clock.offset = dt.timedelta(hours=1)  # a rewrite now would carry a LastModified an hour later
    second, path = exported(tally, "visits-by-country", "parquet", tmp_path)
    again = s3_server.head_object(Bucket=STATE, Key=stored.key)
    assert again["ETag"].strip('"') == stored.etag and again["LastModified"] == stored.last_modified
    assert [o.key for o in runtime.state_store.list("exports/")] == [stored.key]
    assert {k: v for k, v in first.items() if k not in ("url", "expires_at")} == \
        {k: v for k, v in second.items() if k not in ("url", "expires_at")}
    assert duckdb.read_parquet(str(path)).fetchall()  # the URL of the found file works as well
    assert Exporter(runtime.state_store, runtime.reducer, runtime.results, runtime.clock).export(
        runtime.jobs.get("visits-by-country"), "parquet").written is False


def test_concurrent_writers_of_one_generation_meet_412_and_both_answer(tally, runtime, s3_server, monkeypatch):
    job = runtime.jobs.get("bdb-agg-2a")
    exporter = Exporter(runtime.state_store, runtime.reducer, runtime.results, runtime.clock)
    first = exporter.export(job, "csv")
    before = s3_server.head_object(Bucket=STATE, Key=first.key)
    monkeypatch.setattr(runtime.state_store, "head", lambda key: None)  # as if both had missed the file
    second = exporter.export(job, "csv")
    assert first.written and not second.written and second.key == first.key and second.rows == first.rows
    after = s3_server.head_object(Bucket=STATE, Key=first.key)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])


def test_after_a_commit_the_export_is_the_new_generation_and_the_old_one_goes_only_after_the_grace(
        tally, runtime, uploads, tmp_path):
    old, _ = exported(tally, "bdb-agg-2a", "parquet", tmp_path)
    old_csv, _ = exported(tally, "bdb-agg-2a", "csv", tmp_path)
    put(tally, uploads, "uservisits/c.csv", uservisits(10, seed=2))
    reduce(tally)
    new, path = exported(tally, "bdb-agg-2a", "parquet", tmp_path)
    assert (old["generation"], new["generation"]) == (1, 2)
    assert as_served([dict(zip(("sourceIP_prefix", "adRevenue"), r)) for r in
                      duckdb.read_parquet(str(path)).fetchall()]) == served(tally, "bdb-agg-2a")
    keys = [o.key for o in runtime.state_store.list("exports/bdb-agg-2a/") if layout.export_generation(o.key)]
    old_keys = [k for k in keys if layout.export_generation(k) == 1]
    assert len(old_keys) == 2 and len(keys) == 3  # both formats of generation 1 are still there: URLs live
    [record] = [o.key for o in runtime.state_store.list(layout.export_garbage_prefix("bdb-agg-2a"))]
    assert json.loads(runtime.state_store.get(record)[0])["keys"] == sorted(old_keys)
    with urllib.request.urlopen(old["url"]) as response:  # an old URL still works
        assert response.read()[:4] == b"PAR1"

    assert collect_garbage(runtime, "bdb-agg-2a", after=dt.timedelta(0)).deleted == 0  # young record
    assert collect_garbage(runtime, "bdb-agg-2a", after=URL_LIFETIME).deleted == 0  # still within the grace
    collect_garbage(runtime, "bdb-agg-2a")  # past the grace: every URL to them has expired
    assert [o.key for o in runtime.state_store.list("exports/bdb-agg-2a/")] == \
        [k for k in keys if k not in old_keys]
    assert get(tally, "/jobs/bdb-agg-2a/export?format=parquet")[1]["generation"] == 2


def test_an_older_generation_written_after_the_newer_was_listed_names_itself(tally, runtime, uploads):
    """A request exporting generation 1 is slow: between its snapshot and its write, generation 2 is committed
    and exported (whose listing cannot see generation 1's file yet). The slow one then reads the manifest
    again, finds it moved on, and names its own file: nothing is left behind for good."""
    job = runtime.jobs.get("revenue-by-day")

    def newer_commit_and_export():
        put(tally, uploads, "uservisits/c.csv", uservisits(10, seed=2))
        reduce(tally)
        assert runtime.exporter.export(job, "parquet").generation == 2

    slow = Exporter(Before(runtime.state_store, newer_commit_and_export, operation="put_if_absent",
                           key_contains="exports/"), runtime.reducer, runtime.results, runtime.clock)
    assert slow.export(job, "parquet").generation == 1
    records = [json.loads(runtime.state_store.get(o.key)[0])["keys"]
               for o in runtime.state_store.list(layout.export_garbage_prefix(job.name))]
    old = layout.export_key(job.name, 1, job.plan.fingerprint, "parquet")
    assert records == [[old]]
    collect_garbage(runtime, job.name)
    assert [o.key for o in runtime.state_store.list("exports/revenue-by-day/")] == \
        [layout.export_key(job.name, 2, job.plan.fingerprint, "parquet")]


def test_a_record_under_the_exports_prefix_deletes_exports_and_nothing_else(tally, runtime, tmp_path):
    """The API's role writes only under exports/: a record it wrote (or anyone with that right) naming the
    manifest or a result shard must not delete them."""
    from chalicelib.engine import garbage

    body, _ = exported(tally, "bdb-agg-2a", "parquet", tmp_path)
    manifest, _ = runtime.reducer.read_manifest(runtime.jobs.get("bdb-agg-2a"))
    [stale_export] = [o.key for o in runtime.state_store.list("exports/bdb-agg-2a/")]
    # Manifests are no garbage record's business: nothing but the record's own scope protects them.
    state = [layout.manifest_key("bdb-agg-2a"), layout.manifest_key("revenue-by-day"), *manifest.result_keys]
    garbage.write_record(runtime.state_store, "bdb-agg-2a", [*state, stale_export], runtime.clock(), "forged",
                         exports=True)
    collect_garbage(runtime, "bdb-agg-2a", after=dt.timedelta(minutes=61))  # past the grace, not the leak age
    assert all(runtime.state_store.head(key) for key in state)
    assert runtime.state_store.head(stale_export) is None


def test_the_garbage_grace_outlives_every_export_url():
    """A URL is issued at most one request's time after the manifest read that chose its file, and the record
    naming the file is written after that read: the grace must exceed the URL's lifetime plus a request."""
    minimum = next(m.ge for m in Settings.model_fields["garbage_grace_minutes"].metadata if hasattr(m, "ge"))
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    api_timeout = dt.timedelta(seconds=config["lambda_functions"]["api_handler"]["lambda_timeout"])
    assert api_timeout <= export.REQUEST_LIMIT
    assert dt.timedelta(minutes=minimum) > URL_LIFETIME + export.REQUEST_LIMIT
    with pytest.raises(InvalidSettings, match="grace"):
        Exporter(None, None, None, None, garbage_grace=URL_LIFETIME)


@pytest.mark.parametrize("path, status, message", [
    ("/jobs/bdb-agg-2a/export?format=xlsx", 400, "format must be one of"),
    ("/jobs/bdb-agg-2a/export?format=csv&limit=3", 400, "unknown parameter"),
    ("/jobs/nope/export", 404, "nope"),
])
def test_bad_export_requests_are_refused(s3_server, lambdas, path, status, message):
    code, body = get(lambdas, path)
    assert code == status and message in body["message"]
