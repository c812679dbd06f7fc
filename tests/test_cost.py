"""The Lambda cost model, checked against numbers worked out by hand."""
from __future__ import annotations

import pytest

from chalicelib.local import cost

SMALL = cost.Deployment(dataset_bytes=1e9, object_bytes=100e6, concurrency=4, mapper_memory_mb=1769,
                        reducer_memory_mb=1024, s3_stream_mb_s=None, invocation_overhead_s=0.0)
MEASURED = cost.Measured(kernel_mb_s=100, groups_per_object=1000, merge_groups_s=10_000)


def test_a_small_batch_worked_by_hand():
    est = cost.estimate(MEASURED, SMALL)

    assert (est.objects, est.waves) == (10, 3)  # 1 GB in 100 MB objects; 4 at a time: 4 + 4 + 2
    assert est.mapper_seconds == pytest.approx(1.0)  # 100 MB at 100 MB/s on one full vCPU
    assert est.map_gb_seconds == pytest.approx(10 * 1769 / 1024)  # 17.275 GB-s
    assert est.reduce_seconds == pytest.approx(1.0)  # 10 x 1,000 groups at 10,000 groups/s
    assert est.reduce_gb_seconds == pytest.approx(1.0)  # on 1,024 MB
    assert est.lambda_requests == 11  # 10 mappers, 1 reducer run
    # Per object: GET the input in 12 chunks of 8 MiB (ranged GETs in flight), the marker and the part; LIST the
    # earlier attempts and PUT its own, PUT the part and the marker; +5 for the reducer run.
    assert (est.s3_gets, est.s3_puts) == (140, 45)
    assert est.compute_usd == pytest.approx(18.275390625 * 0.0000166667)
    assert est.requests_usd == pytest.approx(11 * 0.2e-6 + 140 * 0.4e-6 + 45 * 5e-6)
    assert est.total_usd == pytest.approx(est.compute_usd + est.requests_usd)
    assert est.wall_seconds == pytest.approx(3 * 1.0 + 1.0)


def test_s3_streams_cap_a_fast_kernel_and_less_memory_slows_it():
    capped = cost.estimate(MEASURED, cost.Deployment(**{**SMALL.__dict__, "s3_stream_mb_s": 50.0, "s3_streams": 1}))
    assert capped.mapper_seconds == pytest.approx(2.0)
    # Ranged GETs in flight add up until the kernel is the slower one again.
    two = cost.estimate(MEASURED, cost.Deployment(**{**SMALL.__dict__, "s3_stream_mb_s": 25.0, "s3_streams": 2}))
    assert two.mapper_seconds == pytest.approx(2.0)
    many = cost.estimate(MEASURED, cost.Deployment(**{**SMALL.__dict__, "s3_stream_mb_s": 50.0, "s3_streams": 4}))
    assert many.mapper_seconds == pytest.approx(1.0)
    half = cost.estimate(MEASURED, cost.Deployment(**{**SMALL.__dict__, "mapper_memory_mb": 1769 // 2}))
    assert half.mapper_seconds == pytest.approx(1769 / 884)  # 884 MB has 884/1769 of a vCPU
    assert half.map_gb_seconds == pytest.approx(10 * 1769 / 1024)  # CPU-bound: the same GB-s at any memory


def test_parts_follow_the_spill_threshold():
    many_groups = cost.Measured(kernel_mb_s=100, groups_per_object=1_200_000, merge_groups_s=1e6)
    est = cost.estimate(many_groups, SMALL)
    # 3 parts of <= 500,000 groups an object; 12 M groups are 6 reducer runs of <= 2 M, each with 5 PUTs.
    assert (est.s3_gets, est.s3_puts) == (10 * (12 + 1 + 3), 10 * (2 + 4) + 6 * 5)
    assert est.lambda_requests == 10 + 6


def test_a_scan_pays_the_reducer_nothing_for_its_output_rows():
    """A map-only job's reducer records output files: its runs and time do not grow with the rows."""
    rows = cost.Measured(kernel_mb_s=100, groups_per_object=1_200_000, merge_groups_s=1e6, scan=True)
    est = cost.estimate(rows, SMALL)
    assert est.reduce_seconds == 0 and est.lambda_requests == 10 + 1
    assert est.s3_puts == 10 * (2 + 4) + 5  # still the attempt, 3 output files and a marker an object


def test_field_notes_figures():
    # 2a on 126.8 GB at DuckDB's one-thread CSV speed (542 MB/s): about $0.0067 of compute.
    duckdb = cost.estimate(cost.Measured(542, 1, 1e9), cost.Deployment(s3_stream_mb_s=None, invocation_overhead_s=0))
    assert duckdb.map_gb_seconds * 0.0000166667 == pytest.approx(126.8e9 / 542e6 * 1769 / 1024 * 0.0000166667)
    assert duckdb.map_gb_seconds * 0.0000166667 == pytest.approx(0.006736, rel=1e-3)
    # BigLambda's $0.1129 on 1,536 MB mappers is compute at about 28 MB/s per Lambda.
    assert cost.implied_mb_s(0.1129, cost.Deployment(mapper_memory_mb=1536)) == pytest.approx(28.08, rel=1e-3)
