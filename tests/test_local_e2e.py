"""Through `tally local`: real files uploaded with boto3 to the loopback S3 endpoint, S3's own notifications,
mapper processes, the timed reducer and the HTTP API; the served results equal DuckDB's, group for group. The
first check runs on SeaweedFS as well, a real object store that sends no notifications (`--s3-endpoint`)."""
from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chalicelib.local.client import TallyClient
from chalicelib.local.datagen import write_uservisits
from chalicelib.local.demo import JOBS, wait_until_idle
from chalicelib.local.referee import bdb_aggregation, differences

from .conftest import INPUT, STATE, running_local_tally
from .seaweed import empty_buckets


@pytest.fixture
def local_tally():
    yield from running_local_tally(workers=2, reduce_every=0.3)


@pytest.fixture
def tally_on_seaweedfs(seaweedfs, seaweed_s3):
    """`tally local --s3-endpoint` on SeaweedFS, whose buckets take no notification configuration: local mode
    lists the input bucket every second instead."""
    empty_buckets(seaweed_s3, INPUT, STATE)
    yield from running_local_tally(workers=2, reduce_every=0.3, s3_endpoint=seaweedfs.endpoint)


@pytest.mark.parametrize("stack", ["local_tally", pytest.param("tally_on_seaweedfs", marks=pytest.mark.seaweedfs)])
def test_uploaded_files_are_served_exactly_as_duckdb_computes_them(stack, request, tmp_path: Path):
    local_tally = request.getfixturevalue(stack)
    paths = write_uservisits(tmp_path / "uservisits", total_bytes=3 << 20, file_bytes=384 << 10, seed=7)
    compressed = paths[0].with_suffix(".csv.gz")
    compressed.write_bytes(gzip.compress(paths[0].read_bytes()))
    paths[0].unlink()
    paths[0] = compressed
    requests = [{"ts": f"2026-01-01 00:00:0{i % 10}", "method": "get" if i % 3 else "post", "path": f"/p{i % 4}",
                 "status": 200 if i % 5 else 500, "latency_ms": float(i), "bytes": i * 10} for i in range(200)]
    s3 = local_tally.client()

    def upload(path: Path) -> None:
        s3.upload_file(str(path), "tally-input", f"uservisits/{path.name}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(upload, paths + [paths[1]]))  # the repeated upload makes S3 send a duplicate event
    s3.put_object(Bucket="tally-input", Key="requests/day one.jsonl",
                  Body="".join(json.dumps(r) + "\n" for r in requests).encode())
    s3.put_object(Bucket="tally-input", Key="uservisits/broken.csv.gz", Body=b"\x1f\x8b\x08\x00garbage")
    api = TallyClient(local_tally.api_url)

    wait_until_idle(api, [*JOBS, "page-latency"], timeout=120)

    for job, length in JOBS.items():
        served = {row["key"]["sourceIP_prefix"]: row["values"]["adRevenue"] for row in api.results(job, page_size=500)}
        assert differences(bdb_aggregation(paths, length), served) == [], job
    expected: dict[tuple, dict] = {}
    for r in (r for r in requests if r["status"] < 500):
        group = expected.setdefault((r["path"], r["method"].upper()), {"requests": 0, "bytes": 0, "latency": []})
        group["requests"] += 1
        group["bytes"] += r["bytes"]
        group["latency"].append(r["latency_ms"])
    served = {(row["key"]["path"], row["key"]["method"]): {**row["values"],
              "mean_latency_ms": float(row["values"]["mean_latency_ms"]),
              "max_latency_ms": float(row["values"]["max_latency_ms"])}
              for row in api.results("page-latency")}
    assert served == {key: {"requests": g["requests"], "bytes": g["bytes"],
                            "mean_latency_ms": pytest.approx(sum(g["latency"]) / len(g["latency"])),
                            "max_latency_ms": max(g["latency"])} for key, g in expected.items()}
    status = api.status("bdb-agg-2a")
    assert status["objects"]["merged"] == len(paths)
    assert [q["key"] for q in status["quarantined"]] == ["uservisits/broken.csv.gz"]
    assert local_tally.errors == []


def test_overwrites_and_deletes_through_local_mode_leave_the_query_over_the_bucket_as_it_is(local_tally, tmp_path):
    paths = write_uservisits(tmp_path / "v1", total_bytes=1 << 20, file_bytes=256 << 10, seed=11)
    replacement = write_uservisits(tmp_path / "v2", total_bytes=256 << 10, file_bytes=256 << 10, seed=12)[0]
    s3 = local_tally.client()
    for path in paths:
        s3.upload_file(str(path), "tally-input", f"uservisits/{path.name}")
    api = TallyClient(local_tally.api_url)
    wait_until_idle(api, list(JOBS), timeout=60)

    s3.upload_file(str(replacement), "tally-input", f"uservisits/{paths[0].name}")  # overwrite
    s3.delete_object(Bucket="tally-input", Key=f"uservisits/{paths[1].name}")      # delete
    wait_until_idle(api, list(JOBS), timeout=60)

    final = [replacement, *paths[2:]]
    assert_served_as_duckdb_computes(api, final)
    assert api.status("bdb-agg-2c")["objects"]["merged"] == len(final)


def assert_served_as_duckdb_computes(api: TallyClient, files: list[Path]) -> None:
    for job, length in JOBS.items():
        served = {row["key"]["sourceIP_prefix"]: row["values"]["adRevenue"] for row in api.results(job)}
        assert differences(bdb_aggregation(files, length), served) == [], job


@pytest.fixture
def splitting_tally():
    yield from running_local_tally(workers=2, reduce_every=0.3, split_mb=32 / 1024)  # 32 KB ranges


def test_large_objects_mapped_as_ranges_in_the_worker_pool_are_served_exactly(splitting_tally, tmp_path):
    """Objects of several ranges each: map_object fans them out, the pool maps the ranges, the reducer
    combines each version once; an overwrite in the middle leaves only the new version."""
    paths = write_uservisits(tmp_path / "big", total_bytes=512 << 10, file_bytes=256 << 10, seed=21)
    replacement = write_uservisits(tmp_path / "v2", total_bytes=150 << 10, file_bytes=150 << 10, seed=22)[0]
    s3 = splitting_tally.client()
    for path in paths:
        s3.upload_file(str(path), "tally-input", f"uservisits/{path.name}")
    s3.upload_file(str(replacement), "tally-input", f"uservisits/{paths[0].name}")  # ranges may be in flight
    api = TallyClient(splitting_tally.api_url)

    wait_until_idle(api, list(JOBS), timeout=120)

    final = [replacement, *paths[1:]]
    assert_served_as_duckdb_computes(api, final)
    assert api.status("bdb-agg-2a")["objects"]["merged"] == len(final)
    assert splitting_tally.errors == []
    assert splitting_tally.mapped_events >= len(paths) + 2 * 8  # three S3 events, and ranges: 8 per 256 KB


def test_what_the_reconcile_finds_in_local_mode_is_mapped_by_the_workers_not_by_the_reconcile(local_tally):
    import datetime as dt

    from chalicelib.runtime import get_runtime

    s3 = local_tally.client()
    # Lose the object's event: no notification is configured when it lands.
    s3.put_bucket_notification_configuration(Bucket="tally-input", NotificationConfiguration={})
    s3.put_object(Bucket="tally-input", Key="uservisits/lost event.csv",
                  Body=b"1.2.3.4,u,2001-01-01,1.5,ua,USA,USA-EN,w,1\n")
    runtime = get_runtime()  # local mode's, with its dispatch into the worker queue

    report = runtime.reconciler.reconcile(runtime.jobs.get("bdb-agg-2a"), grace=dt.timedelta(0))

    assert (report.mapped, report.dispatched) == ([], 1)
    api = TallyClient(local_tally.api_url)
    wait_until_idle(api, ["bdb-agg-2a"], timeout=60)
    assert [row["values"]["adRevenue"] for row in api.results("bdb-agg-2a")] == [1.5]
    assert local_tally.mapped_events >= 1 and local_tally.errors == []
