"""A result's shards as immutable runs (engine/runs.py): a commit writes the change only, as one run per shard it
reaches; reads merge the runs; compaction merges runs into one without changing what is served, and the runs it
replaces go through the garbage collector like every object a commit stops naming."""
from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.reducer import Reducer
from chalicelib.engine.runs import FAN_IN, MAX_RUNS, Run, pick_compaction
from chalicelib.jobs import Job, JobCatalog
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings
from reducers.tables import TABLES

from .conftest import INPUT, STATE, collect_garbage, uservisits_rows

JOB = Job(name="revenue", prefix="uservisits/", format=TABLES["uservisits"].format,
          keys={"ip": "substr(sourceIP, 1, 12)"}, aggregates={"revenue": "sum(adRevenue)", "visits": "count()"},
          shards=4)


def runs(*rows: int) -> tuple[Run, ...]:
    return tuple(Run(f"r{n}", count) for n, count in enumerate(rows))


@pytest.mark.parametrize("sizes, window", [
    ((100,), None),
    ((100, 90, 110), None),                    # fewer than FAN_IN alike
    ((100, 90, 110, 95), (0, 4)),              # FAN_IN alike: one tier
    ((10_000, 100, 90, 110, 95), (1, 5)),      # the big old run is another tier: left alone
    ((10_000, 300, 100, 90, 110, 95), (1, 6)),  # widened to older runs of the tier
    ((5 ** 9, 5 ** 8, 5 ** 7, 5 ** 6, 5 ** 5, 5 ** 4, 5 ** 3, 5 ** 2, 5), (7, 9)),  # no tier: back to MAX_RUNS
])
def test_compaction_merges_the_newest_runs_of_one_size_tier(sizes, window):
    assert FAN_IN == 4 and MAX_RUNS == 8
    assert pick_compaction(runs(*sizes)) == window


def files(first: int, count: int, revenue: str = "1.5") -> list[tuple[str, str]]:
    return [(f"10.{i // 250 % 250}.{i % 250}.1", revenue) for i in range(first, first + count)]


@pytest.fixture
def runtime(s3) -> Runtime:
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, shard_groups=1), s3_client=s3,
                      catalog=JobCatalog([JOB]))
    runtime.reducer.rewrite_groups = 0  # every commit appends: what a large result does
    return runtime


def put(runtime, uploads, key: str, rows) -> None:
    runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))
    runtime.reducer.reduce_job(JOB)


def served(runtime) -> dict[str, tuple[Decimal, int]]:
    _, table = runtime.results.current(JOB)
    assert table.num_rows == len(set(table.column("ip").to_pylist()))  # each group once
    return {row["ip"]: (row["revenue"], row["visits"]) for row in table.to_pylist()}


def expected(*batches) -> dict[str, tuple[Decimal, int]]:
    totals: dict[str, tuple[Decimal, int]] = {}
    for rows in batches:
        for ip, revenue in rows:
            old = totals.get(ip[:12], (Decimal(0), 0))
            totals[ip[:12]] = (old[0] + Decimal(revenue), old[1] + 1)
    return totals


def test_a_commit_writes_a_run_of_the_change_only_and_reads_merge_the_runs(runtime, uploads):
    big, small = files(0, 2_000), files(5_000, 3)
    put(runtime, uploads, "uservisits/big.csv", big)
    before = runtime.reducer.read_manifest(JOB)[0]
    assert all(len(shard) == 1 for shard in before.shards) and before.rows == 2_000

    put(runtime, uploads, "uservisits/small.csv", small)

    after = runtime.reducer.read_manifest(JOB)[0]
    new = [run for shard in after.shards for run in shard if run not in {r for s in before.shards for r in s}]
    assert sum(run.rows for run in new) == 3  # the change's groups, not the shards' 2,000
    assert all(shard[:len(old)] == old for shard, old in zip(after.shards, before.shards))  # kept as they were
    assert served(runtime) == expected(big, small)


def test_an_overwrite_is_a_delta_run_and_compaction_drops_the_groups_it_empties(runtime, uploads):
    first, second = files(0, 300), files(300, 300)
    put(runtime, uploads, "uservisits/a.csv", first)
    put(runtime, uploads, "uservisits/b.csv", second)
    replaced = files(0, 150, "7.25")  # half of a's groups kept with other values, half gone
    put(runtime, uploads, "uservisits/a.csv", replaced)
    assert max(len(shard) for shard in runtime.reducer.read_manifest(JOB)[0].shards) == 3
    assert served(runtime) == expected(second, replaced)
    status = runtime.status.status(JOB)
    assert status["rows_exact"] is False and status["rows"] >= 450  # runs share groups until compacted

    while runtime.reducer.compact(JOB, lambda shard: (0, len(shard)) if len(shard) > 1 else None):
        pass

    manifest = runtime.reducer.read_manifest(JOB)[0]
    assert all(len(shard) == 1 for shard in manifest.shards)
    assert manifest.rows == 450 == len(served(runtime))  # exact once compacted
    assert runtime.status.status(JOB)["rows_exact"] is True
    assert served(runtime) == expected(second, replaced)


def test_compacted_runs_are_collected_after_the_grace_and_the_served_result_stays(runtime, uploads):
    batches = [files(n * 100, 100) for n in range(FAN_IN)]
    for n, rows in enumerate(batches):
        put(runtime, uploads, f"uservisits/{n}.csv", rows)
    before = set(runtime.reducer.read_manifest(JOB)[0].result_keys)

    reports = runtime.reducer.reduce_all()  # nothing pending: the time left compacts

    assert sum(report.compacted for report in reports) >= FAN_IN
    manifest = runtime.reducer.read_manifest(JOB)[0]
    assert all(len(shard) == 1 for shard in manifest.shards)
    assert served(runtime) == expected(*batches)
    listed = {o.key for o in runtime.state_store.list(layout.results_prefix(JOB.name))}
    assert before <= listed  # replaced runs wait for the grace: a reader may hold the old manifest
    collect_garbage(runtime, JOB.name)
    assert {o.key for o in runtime.state_store.list(layout.results_prefix(JOB.name))} == set(manifest.result_keys)
    assert served(runtime) == expected(*batches)


def test_a_first_commit_of_a_partial_stated_row_by_row_serves_each_group_once(s3, uploads):
    """A 2c-like partial (nearly every row its own group) repeats the keys of the few rows that share one."""
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE), s3_client=s3)
    job = runtime.jobs.get("bdb-agg-2c")
    rows = [(f"10.{i // 250}.{i % 250}.1", "1.5") for i in range(70_000)] + [("10.0.0.1", "2")] * 500
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/a.csv", uservisits_rows(*rows))))
    runtime.reducer.reduce_job(job)
    _, table = runtime.results.current(job)
    assert table.num_rows == 70_000 == len(set(table.column("sourceIP_prefix").to_pylist()))


def test_a_reducer_reads_a_manifest_written_before_runs(runtime, uploads):
    import json

    put(runtime, uploads, "uservisits/a.csv", files(0, 50))
    key = layout.manifest_key(JOB.name)
    fields = json.loads(runtime.state_store.get(key)[0])
    fields["result_keys"] = [shard[0][0] if shard else "" for shard in fields.pop("shards")]
    runtime.state_store.put(key, json.dumps(fields).encode())
    cold = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now, shard_groups=1, rewrite_groups=0)
    runtime.__dict__["reducer"] = cold
    runtime.__dict__.pop("results", None)
    assert served(runtime) == expected(files(0, 50))
    put(runtime, uploads, "uservisits/b.csv", files(50, 5))
    assert served(runtime) == expected(files(0, 55))
