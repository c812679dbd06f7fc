"""The scale benchmark (issue 16) at a tiny size: its tables have a row per size, and the result it builds through
the engine really holds N distinct groups. Speed is never asserted."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from chalicelib.engine.reducer import Reducer
from chalicelib.engine.results import ResultReader, ResultsQuery
from chalicelib.jobs import JobCatalog, load_jobs
from chalicelib.local import bench_scale_child
from chalicelib.local.bench_scale import parse_groups
from chalicelib.local.cli import main
from chalicelib.runtime import utc_now
from chalicelib.storage import S3ObjectStore
from tests.conftest import INPUT, STATE
from tests.test_bench import _tables


def test_the_scale_tables_have_a_row_per_size_and_the_results_read_back_whole(tmp_path: Path):
    report = tmp_path / "RESULTS.md"
    # No kernels (no query, no CSV), no other system measurement: the scale benchmark alone.
    assert main(["bench", "--queries", "", "--formats", "parquet", "--skip-e2e", "--skip-reduce",
                 "--rss-object-mb", "0", "--scale-groups", "20K,40K", "--data-dir", str(tmp_path / "data"),
                 "--markdown", str(report)]) == 0

    tables = _tables(report.read_text())
    commits = tables["Scale: a commit into a large result (bdb-agg-2c)"]
    assert [(r["groups N"], r["read back"]) for r in commits] == [("20 K", "20,000"), ("40 K", "40,000")]
    for row in commits:
        assert float(row["commit s"]) > 0 and float(row["commit CPU s"]) > 0
        assert float(row["reducer peak RSS MiB"].replace(",", "")) > 0
        assert row["shards"] == "1"  # 40 K groups and two objects' partials stay under one shard's 1 Mi groups
        assert row["ratio <= 1.5x"] in ("PASS", "FAIL") and row["RSS <= 1,536 MiB"] in ("PASS", "FAIL")
    assert commits[0]["commit / smallest N's"] == "1.00x"

    pages = tables["Scale: the first page of a large result (bdb-agg-2c)"]
    assert [(r["groups"], r["order"]) for r in pages] == [
        ("20 K", "key"), ("20 K", "aggregate desc"), ("40 K", "key"), ("40 K", "aggregate desc")]
    for row in pages:
        served, total = (int(n.replace(",", "")) for n in row["rows / total"].split(" / "))
        assert served == 1000 and total > int(row["groups"].split()[0]) * 1000  # N and the real objects' groups
        assert float(row["cold s"]) > 0 and float(row["warm s"]) > 0

    targets = tables["Targets (issue 16)"]
    assert len(targets) == 4
    assert [r["verdict"] for r in targets[:2]] == ["not measured", "not measured"]  # 1 M and 64 M not built
    assert "linear through 20 K" in targets[0]["measured"]
    assert all(r["verdict"] in ("PASS", "FAIL") for r in targets[2:])


def test_a_built_result_holds_n_distinct_groups_in_the_jobs_state(s3_server, monkeypatch):
    """Several synthetic objects (parts), committed over several reducer runs, read back through the engine."""
    monkeypatch.setattr(bench_scale_child, "PART_GROUPS", 7_000)
    job = load_jobs().get("bdb-agg-2c")
    input_store, state = S3ObjectStore(INPUT, s3_server), S3ObjectStore(STATE, s3_server)

    bench_scale_child.build_result(input_store, state, job, 30_000, batch=14_000)

    reducer = Reducer(JobCatalog([job]), state, input_store, utc_now)  # cold: reads what was committed
    manifest, _ = reducer.read_manifest(job)
    result = reducer.read_result(job, manifest)
    assert result.num_rows == 30_000 == pc.count_distinct(result.column("sourceIP_prefix")).as_py()
    assert not list(state.list(f"jobs/{job.name}/inbox/"))  # every marker committed
    first = ResultReader(reducer).page(job, ResultsQuery(limit=1000))
    assert first.total_rows == 30_000 and len(first.rows) == 1000
    assert [r["key"]["sourceIP_prefix"] for r in first.rows[:2]] == ["000.000.000", "000.000.001"]


def test_synthetic_keys_are_distinct_and_kept_whole_by_2cs_prefix():
    keys = bench_scale_child.synthetic_keys(999_998, 1_000_002).to_pylist()
    assert keys == ["000.999.998", "000.999.999", "001.000.000", "001.000.001"]
    assert all(len(key) <= 12 for key in keys)


def test_group_counts_parse_with_units():
    assert parse_groups("4M, 1M,20K,1500") == (1500, 20_000, 1_000_000, 4_000_000)
    with pytest.raises(ValueError):
        parse_groups("many")
