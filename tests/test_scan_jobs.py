"""Map-only (scan) jobs: the Big Data Benchmark's 1a/1b/1c over rankings. The output served is exactly the
query's rows over the objects now in the prefix — checked against DuckDB over the same files, through
uploads, overwrites and deletes — and output files are plain Parquet that any engine reads."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from chalicelib.engine import layout
from chalicelib.engine.kernel import map_object_bytes
from chalicelib.engine.scan import FILES_SCHEMA, live_files
from chalicelib.jobs import CsvFormat, Job, JobCatalog, ParquetFormat, load_jobs
from chalicelib.local.datagen import rankings_table, write_rankings
from chalicelib.local.referee import bdb_scan

from .conftest import STATE, collect_garbage, rankings_rows, scheduled_event

THRESHOLDS = {"bdb-scan-1a": 1000, "bdb-scan-1b": 100, "bdb-scan-1c": 10}
COLUMNS = {"pageURL": "string", "pageRank": "int64", "avgDuration": "int64"}


def rows_of(table: pa.Table) -> list[tuple[str, int]]:
    return sorted(zip(table.column("pageURL").to_pylist(), table.column("pageRank").to_pylist()))


def served_rows(lambdas, job: str, limit: int = 1000) -> list[tuple[str, int]]:
    """Every output row, paged through the API with its cursors."""
    rows, cursor = [], None
    while True:
        page = get(lambdas, f"/jobs/{job}/results?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        rows += [(r["pageURL"], r["pageRank"]) for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(rows) == page["total_rows"]
            return sorted(rows)


def get(lambdas, path: str) -> dict:
    response = lambdas.http.get(path)
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def deliver(lambdas, uploads, *records) -> None:
    lambdas.lambda_.invoke("map_object", uploads.event(*records))


def reduce(lambdas) -> None:
    lambdas.lambda_.invoke("reduce_results", scheduled_event())


# -- definitions ----------------------------------------------------------------------------------------

def test_the_shipped_scan_jobs_are_the_benchmark_queries():
    jobs = load_jobs()
    for name, threshold in THRESHOLDS.items():
        job = jobs.get(name)
        assert job.is_scan and job.prefix == "rankings/" and job.filter == f"pageRank > {threshold}"
        assert job.plan.output_schema == pa.schema([("pageURL", pa.string()), ("pageRank", pa.int64())])
        assert job.plan.columns == {"pageURL", "pageRank"}  # avgDuration is never converted


@pytest.mark.parametrize("extra, message", [
    ({"select": {"u": "pageURL"}, "keys": {"u": "pageURL"}, "aggregates": {"n": "count()"}}, "not both"),
    ({}, "keys and aggregates"),
    ({"keys": {"u": "pageURL"}}, "keys and aggregates"),
    ({"select": {"u": "pageUrl"}}, "pageUrl"),
    ({"select": {"u": "pageURL"}, "filter": "pageRank + 1"}, "not a condition"),
])
def test_a_job_is_an_aggregation_or_a_scan_and_its_expressions_must_check(extra, message):
    with pytest.raises(ValidationError, match=message):
        Job(name="bad", prefix="rankings/", format=CsvFormat(columns=COLUMNS), **extra)


def test_a_projection_may_compute_and_rename():
    job = Job(name="s", prefix="r/", format=CsvFormat(columns=COLUMNS), filter="pageRank > 1",
              select={"site": "upper(substr(pageURL, 1, 3))", "score": "pageRank * 2"})
    table = pa.table({"pageURL": ["abcd", "efgh"], "pageRank": [1, 5], "avgDuration": [1, 1]})
    assert job.plan.apply(table).to_pylist() == [{"site": "EFG", "score": 10}]


# -- the kernel -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_parquet", [False, True])
def test_the_kernel_maps_one_object_like_duckdb_for_1a_1b_1c(tmp_path, as_parquet):
    [path] = write_rankings(tmp_path, 4 << 20, file_bytes=4 << 20, seed=1, parquet=as_parquet)
    jobs = list(load_jobs())
    scans = [j for j in jobs if j.is_scan]
    if as_parquet:
        scans = [j.model_copy(update={"format": ParquetFormat(columns=COLUMNS)}) for j in scans]
    output = map_object_bytes(scans, path.read_bytes(), f"rankings/{path.name}")
    selected = {}
    for job in scans:
        expected = bdb_scan([path], THRESHOLDS[job.name])
        assert rows_of(output.tables[job.name]) == expected
        selected[job.name] = len(expected) / output.stats.rows
    # The generator's pageRank tail: the three queries keep very different fractions, as in the benchmark.
    assert selected["bdb-scan-1a"] < 0.002 < 0.01 < selected["bdb-scan-1b"] < 0.08 < 0.99 < selected["bdb-scan-1c"]


def test_live_files_drop_retracted_contributions_and_add_markers_in_key_order():
    base = pa.Table.from_pylist([
        {"file": "f/a", "contribution": "ca", "key": "rankings/a", "etag": "1", "rows": 3, "bytes": 10},
        {"file": "f/b", "contribution": "cb", "key": "rankings/b", "etag": "1", "rows": 4, "bytes": 10}],
        FILES_SCHEMA)
    added = [{"contribution": "cb2", "key": "rankings/b", "etag": "2",
              "outputs": [{"file": "f/b2-1", "rows": 1, "bytes": 5}, {"file": "f/b2-0", "rows": 2, "bytes": 5}]},
             {"contribution": "c0", "key": "rankings/0", "etag": "1", "outputs": []}]
    files = live_files(base, ["cb"], added)
    assert files.column("file").to_pylist() == ["f/a", "f/b2-0", "f/b2-1"]


# -- through the Lambdas -------------------------------------------------------------------------------

def upload_file(uploads, path: Path, key: str) -> dict:
    return uploads.put(key, path.read_bytes())


def test_scan_jobs_serve_exactly_duckdbs_rows_through_uploads_overwrites_and_deletes(lambdas, runtime, uploads, tmp_path):
    files = write_rankings(tmp_path / "v1", 3 << 20, file_bytes=1 << 20, seed=5)
    records = [upload_file(uploads, p, f"rankings/{p.name}") for p in files]
    deliver(lambdas, uploads, *records, records[0])  # a duplicate, too
    reduce(lambdas)
    for job, threshold in THRESHOLDS.items():
        assert served_rows(lambdas, job) == bdb_scan(files, threshold), job

    # Overwrite the first file with other rows, delete the second; events arrive in the wrong order, twice.
    [replacement] = write_rankings(tmp_path / "v2", 1 << 20, file_bytes=1 << 20, seed=6)
    replacement = replacement.rename(tmp_path / "v2" / files[0].name)
    overwrite = upload_file(uploads, replacement, f"rankings/{files[0].name}")
    removal = uploads.delete(f"rankings/{files[1].name}")
    deliver(lambdas, uploads, removal, overwrite, records[0], removal)
    reduce(lambdas)
    now = [replacement, files[2]]
    for job, threshold in THRESHOLDS.items():
        assert served_rows(lambdas, job) == bdb_scan(now, threshold), job
        status = get(lambdas, f"/jobs/{job}/status")
        assert status["idle"] is True and status["objects"]["merged"] == 2
        assert status["rows"] == len(bdb_scan(now, threshold))

    # Only the live versions' output files are left in the state bucket, once the collector has run.
    collect_garbage(runtime, "bdb-scan-1c")
    live = get(lambdas, "/jobs/bdb-scan-1c/results?view=files&limit=1000")["files"]
    assert {f["key"] for f in live} == {f"rankings/{files[0].name}", f"rankings/{files[2].name}"}
    runtime_state = uploads.s3.list_objects_v2(Bucket=STATE, Prefix="jobs/bdb-scan-1c/parts/")
    assert sorted(o["Key"] for o in runtime_state.get("Contents", [])) == sorted(f["file"] for f in live)


def test_a_large_output_is_written_in_several_bounded_files_that_together_are_the_query(lambdas, runtime, uploads,
                                                                                         tmp_path):
    runtime.mapper.scan_part_bytes = 100_000  # Arrow bytes of output rows per file
    runtime.mapper.block_size = 64 << 10  # files end at a batch boundary: make batches small too
    [path] = write_rankings(tmp_path, 1 << 20, file_bytes=1 << 20, seed=8)
    deliver(lambdas, uploads, upload_file(uploads, path, "rankings/big.csv"))
    reduce(lambdas)
    files = get(lambdas, "/jobs/bdb-scan-1c/results?view=files&limit=1000")["files"]
    assert len(files) > 5 and len({f["key"] for f in files}) == 1
    assert served_rows(lambdas, "bdb-scan-1c") == bdb_scan([path], 10)


def test_output_files_are_parquet_any_engine_reads_and_never_travel_inline(lambdas, runtime, uploads):
    record = uploads.put("rankings/small.csv", rankings_rows(("a.com", 5), ("b.com", 500), ("c.com", 5000)))
    deliver(lambdas, uploads, record)
    [marker_key] = [o.key for o in runtime.state_store.list(layout.inbox_prefix("bdb-scan-1b"))]
    marker = json.loads(runtime.state_store.get(marker_key)[0])
    assert "inline" not in marker and marker["output_rows"] == 2
    [part] = marker["parts"]
    table = pq.read_table(io.BytesIO(runtime.state_store.get(part)[0]))
    assert table.to_pylist() == [{"pageURL": "b.com", "pageRank": 500}, {"pageURL": "c.com", "pageRank": 5000}]


def test_an_object_with_no_matching_rows_is_live_with_no_output_file(lambdas, runtime, uploads):
    deliver(lambdas, uploads, uploads.put("rankings/low.csv", rankings_rows(("a.com", 5), ("b.com", 50))))
    reduce(lambdas)
    page = get(lambdas, "/jobs/bdb-scan-1a/results")
    assert page["rows"] == [] and page["total_rows"] == 0 and page["next_cursor"] is None
    assert get(lambdas, "/jobs/bdb-scan-1a/status")["idle"] is True
    assert list(runtime.state_store.list(layout.parts_prefix("bdb-scan-1a"))) == []


def test_rows_page_in_small_pages_across_files_and_the_files_view_counts_them(lambdas, uploads):
    records = [uploads.put(f"rankings/{n}.csv", rankings_rows(*[(f"{n}-{i}.com", 200 + i) for i in range(7)]))
               for n in range(3)]
    deliver(lambdas, uploads, *records)
    reduce(lambdas)
    expected = sorted((f"{n}-{i}.com", 200 + i) for n in range(3) for i in range(7))
    assert served_rows(lambdas, "bdb-scan-1b", limit=4) == expected
    files = get(lambdas, "/jobs/bdb-scan-1b/results?view=files&limit=2")
    assert len(files["files"]) == 2 and files["next_cursor"] and files["total_rows"] == 21
    rest = get(lambdas, f"/jobs/bdb-scan-1b/results?view=files&cursor={files['next_cursor']}")
    assert [f["rows"] for f in files["files"] + rest["files"]] == [7, 7, 7] and rest["next_cursor"] is None


@pytest.mark.parametrize("path, message", [
    ("/jobs/bdb-scan-1a/results?order_by=pageRank", "unknown parameter"),
    ("/jobs/bdb-scan-1a/results?limit=zero", "limit"),
    ("/jobs/bdb-scan-1a/results?view=groups", "view"),
    ("/jobs/bdb-scan-1a/results?cursor=garbage", "cursor"),
    ("/jobs/bdb-scan-1a/results/a.com", "scan job"),
])
def test_bad_scan_requests_get_a_400_with_a_message(lambdas, path, message):
    response = lambdas.http.get(path)
    assert response.status_code == 400 and message in json.loads(response.body)["message"]


# -- Parquet input, read with ranged GETs ------------------------------------------------------------------

PARQUET_SCAN = Job(name="scan-parquet", prefix="rankings-parquet/", format=ParquetFormat(columns=COLUMNS),
                   filter="pageRank > 100", select={"pageURL": "pageURL", "pageRank": "pageRank"})


@pytest.fixture
def parquet_runtime(runtime):
    runtime.__dict__["jobs"] = JobCatalog([PARQUET_SCAN])  # before the mapper and reducer are built
    return runtime


def parquet_upload(uploads, key: str, table: pa.Table) -> dict:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=5_000)
    return uploads.put(key, sink.getvalue())


def test_a_parquet_scan_reads_ranges_of_the_version_it_opened(parquet_runtime, uploads, tmp_path):
    runtime = parquet_runtime
    tables = [rankings_table(20_000, np.random.default_rng(seed)) for seed in (1, 2)]
    records = [parquet_upload(uploads, f"rankings-parquet/{i}.parquet", t) for i, t in enumerate(tables)]
    outcomes = runtime.mapper.handle(uploads.event(*records))
    assert [o.outcome for o in outcomes] == ["mapped", "mapped"]
    runtime.reducer.reduce_all()
    for i, table in enumerate(tables):
        pq.write_table(table, tmp_path / f"{i}.parquet")
    manifest, _ = runtime.reducer.read_manifest(PARQUET_SCAN)
    served = runtime.scan_results.page(PARQUET_SCAN, _query(limit=1000))
    assert served["total_rows"] == len(bdb_scan(sorted(tmp_path.glob("*.parquet")), 100)) == manifest.rows


def _query(**options):
    from chalicelib.engine.scan_results import ScanQuery

    return ScanQuery(**options)


def test_a_parquet_object_overwritten_while_it_is_read_is_superseded_not_mixed(parquet_runtime, uploads):
    runtime = parquet_runtime
    record = parquet_upload(uploads, "rankings-parquet/a.parquet", rankings_table(20_000, np.random.default_rng(1)))
    real_open, calls = runtime.input_store.open, []

    def open_then_overwrite(key, **options):
        calls.append(options)
        if len(calls) == 2:  # after the first GET, before the footer's ranged GET
            parquet_upload(uploads, key, rankings_table(10, np.random.default_rng(2)))
        return real_open(key, **options)

    runtime.input_store.open = open_then_overwrite
    [outcome] = runtime.mapper.handle(uploads.event(record))
    assert outcome.outcome == "superseded"
    assert list(runtime.state_store.list(layout.inbox_prefix(PARQUET_SCAN.name))) == []
    assert calls[1]["if_match"] == record["s3"]["object"]["eTag"]


def test_a_file_in_the_prefix_that_is_not_parquet_is_quarantined(parquet_runtime, uploads):
    runtime = parquet_runtime
    [outcome] = runtime.mapper.handle(uploads.event(uploads.put("rankings-parquet/b.parquet", "a,1,2\n")))
    assert outcome.outcome == "quarantined"
    runtime.reducer.reduce_all()
    status = runtime.status.status(PARQUET_SCAN)
    assert status["idle"] is True and status["objects"]["quarantined"] == 1



def test_a_fresh_read_serves_output_mapped_since_the_last_reducer_run_and_writes_nothing(lambdas, runtime, uploads):
    deliver(lambdas, uploads, uploads.put("rankings/a.csv", rankings_rows(("a.com", 500))))
    reduce(lambdas)
    deliver(lambdas, uploads, uploads.put("rankings/b.csv", rankings_rows(("b.com", 700), ("c.com", 5))))
    inbox = sorted(o.key for o in runtime.state_store.list(layout.inbox_prefix("bdb-scan-1b")))

    committed = get(lambdas, "/jobs/bdb-scan-1b/results")
    fresh = get(lambdas, "/jobs/bdb-scan-1b/results?fresh=true")
    files = get(lambdas, "/jobs/bdb-scan-1b/results?view=files&fresh=1")

    assert [(r["pageURL"], r["pageRank"]) for r in committed["rows"]] == [("a.com", 500)]
    assert [(r["pageURL"], r["pageRank"]) for r in fresh["rows"]] == [("a.com", 500), ("b.com", 700)]
    assert fresh["total_rows"] == 2 and [f["key"] for f in files["files"]] == ["rankings/a.csv", "rankings/b.csv"]
    assert sorted(o.key for o in runtime.state_store.list(layout.inbox_prefix("bdb-scan-1b"))) == inbox
    assert get(lambdas, "/jobs/bdb-scan-1b/results")["total_rows"] == 1
