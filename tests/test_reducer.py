"""The reducer: exactly once under overlapping runs, crashes at every step, and late duplicates."""
from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.reducer import Reducer, ReduceReport, plan_reduce
from chalicelib.errors import CommitConflict
from chalicelib.runtime import utc_now

from .conftest import uservisits_rows
from .faults import FaultyStore, Killed

JOB = "bdb-agg-2a"


def served(runtime) -> dict[str, Decimal]:
    job = runtime.jobs.get(JOB)
    _, table = runtime.results.current(job)
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


def map_files(runtime, uploads, files: dict[str, list[tuple[str, str]]]) -> None:
    for key, rows in files.items():
        runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))


def expected(files: dict[str, list[tuple[str, str]]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for rows in files.values():
        for ip, revenue in rows:
            totals[ip[:8]] = totals.get(ip[:8], Decimal(0)) + Decimal(revenue)
    return totals


def listing(runtime, prefix: str) -> list[str]:
    return [o.key for o in runtime.state_store.list(prefix)]


FILES = {
    "uservisits/a.csv": [("1.1.1.1", "1.25"), ("2.2.2.2", "2")],
    "uservisits/b.csv": [("1.1.1.1", "0.75"), ("3.3.3.3", "3.000001")],
    "uservisits/c.csv": [("2.2.2.2", "10")],
}


def test_plan_merges_whole_new_contributions_drops_merged_ones_and_waits_for_incomplete_ones():
    def part(contribution: str, index: int, last: bool) -> str:
        return layout.part_key(JOB, contribution, "g10", index, last)

    c1 = [part("c1", 0, True)]
    c2 = [part("c2", 0, False), part("c2", 1, True)]
    c3 = [part("c3", 0, False), part("c3", 1, False)]          # its mapper has not written the last part yet
    c4 = [part("c4", 0, False), part("c4", 2, True)]           # part 1 missing
    c5 = [part("c5", 0, False), part("c5", 1, True), layout.part_key(JOB, "c5", "g99", 0, False)]
    plan = plan_reduce(JOB, None, None, merged={"c5"}, inbox=c1 + c2 + c3 + c4 + c5, limit=10)
    assert plan.merge == (tuple(c1), tuple(c2))
    assert plan.drop == tuple(sorted(c5))
    assert plan_reduce(JOB, None, None, set(), c1 + c2, limit=1).merge == (tuple(c1),)


def test_two_reducers_planning_the_same_state_commit_once(runtime, uploads):
    map_files(runtime, uploads, FILES)
    job = runtime.jobs.get(JOB)
    first, second = runtime.reducer, Reducer(runtime.jobs, runtime.state_store, utc_now)
    plan_a, plan_b = first.plan(job), second.plan(job)

    first.execute(job, plan_a, ReduceReport(JOB))
    with pytest.raises(CommitConflict):
        second.execute(job, plan_b, ReduceReport(JOB))

    assert served(runtime) == expected(FILES)
    assert len(listing(runtime, layout.results_prefix(JOB))) == 1  # the loser removed its result
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


def test_reducers_racing_in_threads_while_mappers_write_count_everything_once(s3_server, runtime, uploads):
    files = {f"uservisits/f{i:03d}.csv": [(f"10.{i % 7}.0.1", f"{i}.5"), ("1.1.1.1", "0.000001")]
             for i in range(30)}
    reducers = [Reducer(runtime.jobs, runtime.state_store, utc_now, batch=4) for _ in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def reduce_forever(reducer: Reducer) -> None:
        while not stop.is_set():
            try:
                reducer.reduce_job(runtime.jobs.get(JOB))
            except CommitConflict:
                pass
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reduce_forever, args=(r,)) for r in reducers]
    for thread in threads:
        thread.start()
    map_files(runtime, uploads, files)
    stop.set()
    for thread in threads:
        thread.join()
    while runtime.reducer.reduce_job(runtime.jobs.get(JOB)).merged:
        pass

    assert errors == []
    assert served(runtime) == expected(files)
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


@pytest.mark.parametrize("operation, after, key_contains", [
    ("put_if_absent", False, "/results/"),   # dies before writing the new result
    ("put_if_absent", True, "/ledger/"),     # dies after writing result and ledger, before the commit
    ("put_if_match", False, "manifest"),     # dies just before the commit
    ("put_if_match", True, "manifest"),      # dies right after the commit
    ("delete", False, "/inbox/"),            # dies before cleaning up merged partials
    ("delete", True, "/inbox/"),             # dies after cleaning them up, before garbage collection
])
def test_reducer_killed_at_any_step_converges_on_the_next_run(runtime, uploads, operation, after, key_contains):
    map_files(runtime, uploads, dict(list(FILES.items())[:2]))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))  # a first generation, so the next commit is an If-Match
    map_files(runtime, uploads, dict(list(FILES.items())[2:]))
    faulty = Reducer(runtime.jobs, FaultyStore(runtime.state_store, operation, after=after,
                                               key_contains=key_contains), utc_now)

    with pytest.raises(Killed):
        faulty.reduce_job(runtime.jobs.get(JOB))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    assert served(runtime) == expected(FILES)
    assert listing(runtime, layout.inbox_prefix(JOB)) == []
    assert len(listing(runtime, layout.results_prefix(JOB))) == 1
    assert len(listing(runtime, layout.ledger_prefix(JOB))) == 1


def test_mapper_killed_after_writing_its_partial_is_retried_without_double_counting(runtime, uploads):
    record = uploads.put("uservisits/a.csv", uservisits_rows(*FILES["uservisits/a.csv"]))
    runtime.mapper.state = FaultyStore(runtime.state_store, "put", after=True, key_contains="/inbox/")
    with pytest.raises(Killed):
        runtime.mapper.handle(uploads.event(record))  # Lambda records a failure and retries the event
    runtime.mapper.state = runtime.state_store
    runtime.mapper.handle(uploads.event(record))
    runtime.reducer.reduce_all()

    assert served(runtime) == expected({"uservisits/a.csv": FILES["uservisits/a.csv"]})


def test_a_failing_job_does_not_stop_the_others_but_fails_the_run(runtime, uploads):
    map_files(runtime, uploads, FILES)
    runtime.state_store.put(layout.part_key(JOB, "garbage", "g1", 0, True), b"not an arrow stream")

    reports = runtime.reducer.reduce_all()  # an unusable partial is dropped with a warning, not merged

    assert served(runtime) == expected(FILES)
    assert {r.job for r in reports if r.merged} == {"bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c"}
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


def test_a_high_cardinality_object_is_mapped_in_parts_and_merged_once_whole(runtime, uploads):
    rows = [(f"{i}.{i}.{i}.{i}", f"{i}.25") for i in range(1, 41)]  # 40 groups in 2a
    runtime.mapper.max_groups, runtime.mapper.block_size = 8, 512  # ~6 rows a batch: several parts
    record = uploads.put("uservisits/wide.csv", uservisits_rows(*rows))
    runtime.mapper.state = FaultyStore(runtime.state_store, "put", after=True, nth=3, key_contains="bdb-agg-2a/inbox/")
    with pytest.raises(Killed):
        runtime.mapper.handle(uploads.event(record))  # two parts written, the last one never
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    assert served(runtime) == {}  # an incomplete contribution is not merged

    runtime.mapper.state = runtime.state_store
    runtime.mapper.handle(uploads.event(record))  # Lambda's retry writes every part again
    parts = listing(runtime, layout.inbox_prefix(JOB))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    assert len(parts) > 2 and parts[-1].endswith("-last.arrow")
    assert served(runtime) == expected({"uservisits/wide.csv": rows})
    assert listing(runtime, layout.inbox_prefix(JOB)) == []
