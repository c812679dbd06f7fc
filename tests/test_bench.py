"""`tally bench` at a tiny size: the table has its rows and columns and sane numbers. Speed is never asserted."""
from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from chalicelib.engine.events import ObjectEvent
from chalicelib.engine.mapper import Mapper
from chalicelib.jobs import load_jobs
from chalicelib.local import bench_data
from chalicelib.local.bench_kernels import (best_of_each, duckdb_runner, duckdb_sql, find_job, job_in_format,
                                            python_loop, tally_kernel)
from chalicelib.local.bench_system import partial_groups
from chalicelib.local.cli import main
from chalicelib.runtime import utc_now
from tests.conftest import INPUT


def _tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Each '## title' table of the report as a list of {column: cell}."""
    tables, title, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            title, header = line[3:], None
            tables[title] = []
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            else:
                tables[title].append(dict(zip(header, cells)))
    return tables


def _number(cell: str) -> float:
    return float(cell.rstrip("x*").lstrip("$").replace(",", "").split()[0])


@pytest.fixture(scope="module")
def uservisits(tmp_path_factory) -> bench_data.Dataset:
    return bench_data.uservisits(tmp_path_factory.mktemp("bench-data"), size_mb=1, seed=3)


def test_bench_prints_the_table_with_every_query_and_format(tmp_path: Path):
    report = tmp_path / "RESULTS.md"
    assert main(["bench", "--size-mb", "1", "--formats", "csv", "--queries", "1a,2a", "--repeat", "1",
                 "--skip-e2e", "--skip-reduce", "--skip-scale", "--rss-object-mb", "0",
                 "--data-dir", str(tmp_path / "data"),
                 "--markdown", str(report)]) == 0

    text = report.read_text()
    assert "Command: `tally bench" in text and "cores" in text
    tables = _tables(text)
    kernel = tables[next(t for t in tables if t.startswith("Map kernel"))]
    assert [(r["query"], r["format"]) for r in kernel][:2] == [("1a", "csv"), ("2a", "csv")]
    assert len(kernel) == 3 and kernel[2]["query"].endswith("uservisits/ jobs (one pass)")
    scan_built = find_job(load_jobs(), "1a") is not None
    for row in kernel:
        if row["query"] == "1a" and not scan_built:
            assert row["Tally"] == "n/a (job not built)"
            continue
        for column in ("object MB", "Tally"):
            assert _number(row[column]) > 0, row
        if "one pass" not in row["query"]:
            for column in ("DuckDB 1 thread", "Tally / DuckDB", "Python, BigLambda's loop"):
                assert _number(row[column]) > 0, row
    csv_2a = next(r for r in kernel if (r["query"], r["format"]) == ("2a", "csv"))
    assert _number(csv_2a["DuckDB, DOUBLE"]) > 0 and _number(csv_2a["Python csv.reader"]) > 0

    partials = tables[next(t for t in tables if t.startswith("Partials on the wire"))]
    assert [r["format"] for r in partials][:2] == ["Arrow IPC, lz4 (Tally's codec, a mapper's partial)",
                                                    "Arrow IPC, zstd (Tally's codec, kept results)"]
    assert partials[0]["size / Tally's"] == "1.00x" and all(_number(r["MB"]) > 0 for r in partials)
    json_lines = next(r for r in partials if r["format"].startswith("JSON"))
    assert _number(json_lines["size / Tally's"]) > 1  # what a columnar, compressed format saves

    costs = tables[next(t for t in tables if t.startswith("Cost model"))]
    two_a = next(r for r in costs if r["query"] == "2a")
    assert _number(two_a["$ (compute + requests)"]) > 0 and two_a["BigLambda s / $"] == "200 s / $0.1129"
    targets = tables["Targets (issue 4)"]
    assert len(targets) == 6
    assert all(r["verdict"] in ("PASS", "FAIL", "not measured") for r in targets)
    assert tables["Scale: a commit into a large result (bdb-agg-2c)"][0]["RSS <= 1,536 MiB"] == "skipped (--skip-scale)"


def test_three_engines_compute_the_same_groups(uservisits):
    """The kernel, DuckDB and the Python loops answer the same query: same number of groups."""
    job = load_jobs().get("bdb-agg-2c")
    body = uservisits.csv.read_bytes()
    columns = list(job.format.columns)
    groups = tally_kernel(body, "uservisits/x.csv", [job])["bdb-agg-2c"]
    assert groups > 1000
    assert duckdb_runner(duckdb_sql("2c", "csv", str(uservisits.csv), job.format.columns))() == groups
    assert python_loop(body, "csv", "2c", columns, use_csv=False)() == groups
    assert python_loop(body, "csv", "2c", columns, use_csv=True)() == groups
    jsonl = job_in_format(job, "jsonl")
    path = uservisits.path("jsonl")
    assert tally_kernel(path.read_bytes(), "uservisits/x.jsonl", [jsonl])["bdb-agg-2c"] == groups
    assert duckdb_runner(duckdb_sql("2c", "jsonl", str(path), job.format.columns))() == groups
    gz = uservisits.path("csv.gz")
    assert tally_kernel(gz.read_bytes(), "uservisits/x.csv.gz", [job])["bdb-agg-2c"] == groups


def test_the_kernel_is_the_mappers_code_path(runtime, uploads, uservisits):
    """What the kernel measures maps an object to the partials the mapper writes (groups per job, spilled
    parts included: a small group budget)."""
    body = uservisits.parts[0].read_bytes()
    record = uploads.put("uservisits/part.csv", body)
    jobs = [job for job in runtime.jobs if job.matches("uservisits/part.csv")]
    mapper = Mapper(runtime.jobs, runtime.input_store, runtime.state_store, utc_now, max_groups=2000)
    mapper.map_object(ObjectEvent(INPUT, "uservisits/part.csv", record["s3"]["object"]["eTag"], len(body)))
    written = {job.name: partial_groups(runtime.state_store, job) for job in jobs}
    assert written == tally_kernel(body, "uservisits/part.csv", jobs, max_groups=2000)


def test_reducer_merge_rates(uservisits):
    from chalicelib.local.bench_system import merge_rates

    catalog = load_jobs()
    small, large, unsharded = merge_rates(uservisits.csv.read_bytes(), catalog.get("bdb-agg-2a"),
                                          catalog.get("bdb-agg-2c"), small=12, large=2)
    assert (small.partials, large.partials, unsharded.partials) == (12, 2, 2)
    assert (large.shards, unsharded.shards) == (16, 1) and large.result_groups == unsharded.result_groups
    for rate in (small, large, unsharded):
        assert rate.seconds > 0 and rate.partials_s > 0 and rate.groups_s > 0 and rate.merge_groups_s > 0
        assert 0 < rate.result_groups <= rate.groups


def test_a_warm_commit_is_timed_into_a_result_built_from_numbered_copies(uservisits):
    from chalicelib.local.bench_system import warm_commit

    job = load_jobs().get("bdb-agg-2c").model_copy(update={"shards": 4})
    body = uservisits.csv.read_bytes()
    rate = warm_commit(body, job, copies=3)

    one_copy = len({line.split(b",")[0][:12] for line in body.splitlines()})
    assert rate.into_groups >= 3 * one_copy * 0.9  # the copies' groups hardly overlap
    assert rate.result_groups == rate.into_groups + rate.groups  # the new copy's groups are all new
    assert rate.partials == 1 and 1 <= rate.shards <= 4 and rate.seconds > 0 and rate.merge_seconds > 0


def test_mapper_peak_memory_is_read_from_a_child_process(uservisits):
    from chalicelib.local.bench_system import mapper_peak_memory

    (peak,) = mapper_peak_memory(uservisits.parts[0], ["bdb-agg-2c"])
    assert peak.job == "bdb-agg-2c" and peak.object_bytes == uservisits.parts[0].stat().st_size
    assert 0 < peak.baseline_mib <= peak.peak_mib and peak.groups > 0


def test_engines_compared_are_timed_in_turn_and_each_keeps_its_best_run():
    calls, seconds = [], {"tally": iter([0.15, 0.01, 0.08]), "duckdb": iter([0.08, 0.15, 0.01])}

    def engine(name):
        def run():
            calls.append(name)
            time.sleep(next(seconds[name]))
            return len(calls)
        return run

    best = best_of_each(3, {"tally": engine("tally"), "duckdb": engine("duckdb")})

    assert calls == ["tally", "duckdb"] * 3
    assert best["tally"].result_rows == 3 and best["duckdb"].result_rows == 6  # their fastest runs


def test_a_format_that_does_not_give_the_partial_back_is_refused(monkeypatch):
    from chalicelib.local import bench_partials

    plan = load_jobs().get("bdb-agg-2c").plan
    partial = plan.lift(pa.table({"sourceIP": ["1.2.3.4", "5.6.7.8"], "adRevenue": pa.array(
        [Decimal("1.5"), Decimal("2.25")], pa.decimal128(18, 6))}))
    assert {f.groups for f in bench_partials.partial_formats(partial, plan.fingerprint, 1)} == {2}

    write = bench_partials._parquet
    monkeypatch.setattr(bench_partials, "_parquet", lambda table: write(table.slice(1)))  # loses a group
    with pytest.raises(AssertionError, match="Parquet"):
        bench_partials.partial_formats(partial, plan.fingerprint, 1)
