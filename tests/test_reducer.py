"""The reducer: exactly once under overlapping runs, crashes at every step, and late duplicates."""
from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.changes import plan_changes
from chalicelib.engine.reducer import Reducer, ReduceReport, _batches_of_entries, _within_groups
from chalicelib.errors import CommitConflict
from chalicelib.runtime import utc_now

from .conftest import collect_garbage, uservisits_rows
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


def reducer(runtime, store=None, batch: int = 500) -> Reducer:
    return Reducer(runtime.jobs, store or runtime.state_store, runtime.input_store, utc_now, batch)


def test_two_reducers_planning_the_same_state_commit_once(runtime, uploads):
    map_files(runtime, uploads, FILES)
    job = runtime.jobs.get(JOB)
    first, second = runtime.reducer, reducer(runtime)
    seen_a, seen_b = first.gather(job), second.gather(job)
    plan_a = plan_changes(seen_a.entries, seen_a.markers, seen_a.current)
    plan_b = plan_changes(seen_b.entries, seen_b.markers, seen_b.current)

    first.execute(job, seen_a, plan_a, ReduceReport(JOB))
    with pytest.raises(CommitConflict):
        second.execute(job, seen_b, plan_b, ReduceReport(JOB))

    assert served(runtime) == expected(FILES)
    winner = runtime.reducer.read_manifest(job)[0]
    assert set(listing(runtime, layout.results_prefix(JOB))) == set(winner.result_keys)  # the loser removed its own


def test_reducers_racing_in_threads_while_mappers_write_count_everything_once(s3_server, runtime, uploads):
    files = {f"uservisits/f{i:03d}.csv": [(f"10.{i % 7}.0.1", f"{i}.5"), ("1.1.1.1", "0.000001")]
             for i in range(30)}
    reducers = [reducer(runtime, batch=4) for _ in range(3)]
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
    ("delete", False, "/inbox/"),            # dies before deleting the processed markers
    ("delete", True, "/inbox/"),             # dies after deleting them, before garbage collection
])
def test_reducer_killed_at_any_step_converges_on_the_next_run(runtime, uploads, operation, after, key_contains):
    map_files(runtime, uploads, dict(list(FILES.items())[:2]))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))  # a first generation, so the next commit is an If-Match
    map_files(runtime, uploads, dict(list(FILES.items())[2:]))
    faulty = reducer(runtime, FaultyStore(runtime.state_store, operation, after=after, key_contains=key_contains))

    with pytest.raises(Killed):
        faulty.reduce_job(runtime.jobs.get(JOB))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    assert served(runtime) == expected(FILES)
    assert listing(runtime, layout.inbox_prefix(JOB)) == []
    collect_garbage(runtime, JOB)  # collects what the crash left behind, once no run can still need it
    manifest = runtime.reducer.read_manifest(runtime.jobs.get(JOB))[0]
    assert set(listing(runtime, layout.results_prefix(JOB))) == set(manifest.result_keys)  # one run, its board
    assert len(manifest.result_keys) == 2
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
    runtime.state_store.put(layout.inbox_key(JOB, "garbage"), b"not a marker")

    reports = runtime.reducer.reduce_all()  # a marker Tally did not write is deleted with a warning

    assert served(runtime) == expected(FILES)
    assert {r.job for r in reports if r.merged} == {job.name for job in runtime.jobs.for_key("uservisits/a.csv")}
    assert len({r.job for r in reports if r.merged}) == 7
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


def test_a_high_cardinality_object_is_mapped_in_parts_and_merged_once_whole(runtime, uploads):
    rows = [(f"{i}.{i}.{i}.{i}", f"{i}.25") for i in range(1, 41)]  # 40 groups in 2a
    runtime.mapper.max_groups, runtime.mapper.block_size = 8, 512  # ~6 rows a batch: several parts
    record = uploads.put("uservisits/wide.csv", uservisits_rows(*rows))
    runtime.mapper.state = FaultyStore(runtime.state_store, "put", after=True, nth=2, key_contains="bdb-agg-2a/parts/")
    with pytest.raises(Killed):
        runtime.mapper.handle(uploads.event(record))  # two parts written, no marker
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    assert served(runtime) == {}  # parts without their marker are not merged

    runtime.mapper.state = runtime.state_store
    runtime.mapper.handle(uploads.event(record))  # Lambda's retry writes every part again, then the marker
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    assert len(listing(runtime, layout.parts_prefix(JOB))) > 2  # kept: a later retraction may need them
    assert served(runtime) == expected({"uservisits/wide.csv": rows})
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


def test_a_marker_counts_the_groups_of_all_its_parts(runtime, uploads):
    rows = [(f"{i}.{i}.{i}.{i}", "1") for i in range(1, 41)]  # 40 groups in 2a
    runtime.mapper.max_groups, runtime.mapper.block_size = 8, 512  # several parts
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/wide.csv", uservisits_rows(*rows))))

    [marker_key] = listing(runtime, layout.inbox_prefix(JOB))
    marker = json.loads(runtime.state_store.get(marker_key)[0])
    parts = runtime.reducer.read_parts(runtime.jobs.get(JOB), marker["parts"])
    assert len(parts) > 1 and marker["groups"] == sum(part.num_rows for part in parts) == 40


def test_a_backlog_of_big_partials_is_merged_a_bounded_batch_at_a_time(runtime, uploads):
    """Each file's partial holds 6 groups; a run reads at most 10 (but always at least one marker), so three
    files take three commits, which one reduce_all drains, and the result is all three files."""
    files = {f"uservisits/f{n}.csv": [(f"10.{n}.{i}.1", f"{i}.5") for i in range(6)] for n in range(3)}
    map_files(runtime, uploads, files)
    bounded = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now, max_groups=10)

    reports = [r for r in bounded.reduce_all() if r.job == JOB]

    assert [(r.merged, r.more_pending) for r in reports] == [(1, True), (1, True), (1, False)]
    assert served(runtime) == expected(files)
    assert listing(runtime, layout.inbox_prefix(JOB)) == []


def test_the_group_budget_counts_input_rows_for_markers_that_do_not_count_groups():
    put = {"kind": "put", "key": "k", "contribution": "c"}
    markers = [{**put, "groups": 4}, {**put, "rows": 5}, {**put, "groups": 1}]
    assert _within_groups(markers, 9, {}) == (markers[:2], True)
    assert _within_groups(markers, 10, {}) == (markers, False)
    assert _within_groups([{**put, "groups": 50}, {"kind": "removed"}], 10, {}) == ([{**put, "groups": 50}], True)


def test_the_group_budget_counts_the_live_version_a_marker_may_retract():
    removed, put = {"kind": "removed", "key": "big"}, {"kind": "put", "key": "new", "groups": 4}
    assert _within_groups([removed, put], 10, {"big": 8}) == ([removed], True)
    assert _within_groups([put, removed], 10, {"big": 8}) == ([put], True)
    assert _within_groups([removed, put], 12, {"big": 8}) == ([removed, put], False)


def test_deleting_a_backlog_of_big_objects_is_retracted_a_bounded_batch_at_a_time(runtime, uploads):
    """Each file's partial holds 6 groups; with a budget of 10 a run retracts one file's partial at a time
    (reading and merging it as it would an added one), and the result is the file left."""
    files = {f"uservisits/f{n}.csv": [(f"10.{n}.{i}.1", f"{i}.5") for i in range(6)] for n in range(3)}
    map_files(runtime, uploads, files)
    runtime.reducer.reduce_all()
    for key in ["uservisits/f0.csv", "uservisits/f1.csv"]:
        runtime.mapper.handle(uploads.event(uploads.delete(key)))
    bounded = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now, max_groups=10)

    reports = [r for r in bounded.reduce_all() if r.job == JOB]

    assert [(r.retracted, r.more_pending) for r in reports] == [(1, True), (1, False)]
    assert served(runtime) == expected({"uservisits/f2.csv": files["uservisits/f2.csv"]})


class CountingStore:
    """Passes every call through to `store`, counting them by operation."""

    def __init__(self, store):
        self.store, self.calls = store, {}

    def __getattr__(self, name):
        target = getattr(self.store, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return target(*args, **kwargs)
        return call


# A budget of 3 listed keys cannot cover the keys' range: the rest by HEAD.
@pytest.mark.parametrize("budget", [None, 3])
def test_current_versions_from_a_listing_are_what_head_says(runtime, uploads, monkeypatch, budget):
    if budget:
        monkeypatch.setattr("chalicelib.engine.reducer.LISTED_PER_KEY", budget / 45)
    for i in range(90):
        if i % 3:
            uploads.put(f"uservisits/k{i:03d}.csv", uservisits_rows(("1.1.1.1", str(i))))
    uploads.put("uservisits/k0.csv", "before the range")
    uploads.put("uservisits/l.csv", "after the range")
    keys = [f"uservisits/k{i:03d}.csv" for i in range(0, 90, 2)]  # 45 keys, a third of them absent
    counting = CountingStore(runtime.input_store)

    current = Reducer(runtime.jobs, runtime.state_store, counting, utc_now).current_versions(keys)

    assert {k: c and c.etag for k, c in current.items()} == {
        k: h and h.etag for k in keys for h in [runtime.input_store.head(k)]}
    assert sum(c is None for c in current.values()) == 15
    # Budget 3: the listed k001, k002 and k004 answer k000, k002 and k004; HEADs the rest.
    assert counting.calls.get("head", 0) == (0 if budget is None else 45 - 3)


def test_a_few_keys_are_answered_by_head(runtime, uploads):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))
    counting = CountingStore(runtime.input_store)

    current = Reducer(runtime.jobs, runtime.state_store, counting, utc_now).current_versions(
        ["uservisits/a.csv", "uservisits/b.csv"])

    assert current["uservisits/b.csv"] is None and current["uservisits/a.csv"].version_id is None
    assert counting.calls == {"head": 2}


def test_reading_the_committed_state_while_a_commit_replaces_it_reads_a_consistent_pair(runtime, uploads):
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, dict(list(FILES.items())[:1]))
    runtime.reducer.reduce_job(job)
    map_files(runtime, uploads, dict(list(FILES.items())[1:2]))

    class CommitBeforeFirstLedgerRead(CountingStore):
        collect = False

        def get(self, key):
            if "/ledger/" in key and not self.calls:
                self.calls["raced"] = 1
                runtime.reducer.reduce_job(job)  # commits generation 2, retiring generation 1's ledger
                if self.collect:  # ... and an hour passes: the collector deletes it
                    collect_garbage(runtime, JOB)
            return self.store.get(key)

    racing = CommitBeforeFirstLedgerRead(runtime.state_store)
    manifest, ledger = Reducer(runtime.jobs, racing, runtime.input_store, utc_now).read_committed(job)
    assert racing.calls == {"raced": 1}
    assert manifest.generation == 1 and ledger.num_rows == 1  # the retired ledger is still there to read

    map_files(runtime, uploads, dict(list(FILES.items())[2:]))
    racing = CommitBeforeFirstLedgerRead(runtime.state_store)
    racing.collect = True
    manifest, ledger = Reducer(runtime.jobs, racing, runtime.input_store, utc_now).read_committed(job)
    assert racing.calls == {"raced": 1}
    assert manifest.generation == 3 and ledger.num_rows == 3  # gone: read again, from the new manifest


def test_a_warm_reducer_does_not_fetch_the_result_and_ledger_it_committed(runtime, uploads):
    job = runtime.jobs.get(JOB)
    counting = CountingStore(runtime.state_store)
    warm = Reducer(runtime.jobs, counting, runtime.input_store, utc_now)
    fetched = []
    counting.get = lambda key: fetched.append(key) or runtime.state_store.get(key)
    map_files(runtime, uploads, dict(list(FILES.items())[:1]))
    warm.reduce_job(job)
    map_files(runtime, uploads, dict(list(FILES.items())[1:]))
    fetched.clear()

    warm.reduce_job(job)

    assert [key for key in fetched if "/results/" in key or "/ledger/" in key] == []
    assert served(runtime) == expected(FILES)


def test_deleting_an_object_rebuilds_sketch_results_from_the_retained_partials(runtime, uploads):
    """Sketches cannot be subtracted: after a delete and an overwrite the served sketches are those of the
    objects left, as if the removed rows had never come."""
    files = {"uservisits/a.csv": [("1.1.1.1", "1"), ("2.2.2.2", "2")],
             "uservisits/b.csv": [("3.3.3.3", "3"), ("4.4.4.4", "4"), ("5.5.5.5", "5")]}
    map_files(runtime, uploads, files)
    runtime.reducer.reduce_all()
    job = runtime.jobs.get("visits-by-country")

    def usa() -> dict:
        _, table = runtime.results.current(job)
        return table.to_pylist()[0]

    assert usa()["visitors"] == 5
    runtime.mapper.handle(uploads.event(uploads.delete("uservisits/b.csv")))
    map_files(runtime, uploads, {"uservisits/a.csv": [("9.9.9.9", "9")]})  # overwritten
    runtime.reducer.reduce_all()
    assert usa()["visitors"] == 1 and usa()["top_words"] == [{"value": "word", "count": 1}]
    assert usa()["revenue_stddev"] is None  # one value left: no sample stddev


def test_a_run_whose_retained_partials_an_overlapping_run_deleted_loses_the_race_cleanly(runtime, uploads):
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, dict(list(FILES.items())[:2]))
    runtime.reducer.reduce_job(job)  # both files' partials live in one pack
    for key in list(FILES)[:2]:
        runtime.mapper.handle(uploads.event(uploads.delete(key)))
    # The slow run is the one that committed the pack's generation: it still holds that result in memory.
    slow, fast = runtime.reducer, reducer(runtime)
    seen = slow.gather(job)

    fast.reduce_job(job)  # retracts both and deletes the pack nobody needs any more
    with pytest.raises(CommitConflict):
        slow.execute(job, seen, plan_changes(seen.entries, seen.markers, seen.current), ReduceReport(JOB))

    assert served(runtime) == {}


def test_a_rebuild_from_one_pack_merges_the_groups_its_versions_share(runtime, uploads):
    """Partials kept in one pack are several partials: a group two of them share is merged, not served twice,
    when a delete rebuilds a max (not subtractable) from them alone."""
    map_files(runtime, uploads, {"uservisits/a.csv": [("1.1.1.1", "1")], "uservisits/b.csv": [("1.1.1.1", "2")],
                                 "uservisits/c.csv": [("2.2.2.2", "3")]})
    runtime.reducer.reduce_all()  # the three partials are inline, kept in one pack
    runtime.mapper.handle(uploads.event(uploads.delete("uservisits/c.csv")))
    runtime.reducer.reduce_all()

    _, table = runtime.results.current(runtime.jobs.get("visits-by-country"))
    assert table.num_rows == 1 and table.to_pylist()[0]["visitors"] == 1


def test_a_rebuild_reads_the_retained_partials_a_bounded_batch_at_a_time(runtime, uploads):
    """A delete rebuilds a sketch (not subtractable) from every live version's partial. With a budget of 4
    groups a batch (input rows, which bound them), the four files left, of 2 rows each, are read two at a time,
    and the rebuilt result is that of those files."""
    job = "visits-by-country"
    files = {f"uservisits/f{n}.csv": [(f"{n}.1.1.{i}", f"{n}{i}") for i in range(2)] for n in range(5)}
    for key, rows in files.items():  # one reducer run each: every partial is kept in its own pack
        map_files(runtime, uploads, {key: rows})
        runtime.reducer.reduce_all()
    runtime.mapper.handle(uploads.event(uploads.delete("uservisits/f4.csv")))
    bounded = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now, max_groups=4)
    batches = []
    read_retained = bounded.read_retained
    bounded.read_retained = lambda j, entries: batches.append(sorted(e["key"] for e in entries)) or \
        read_retained(j, entries)

    bounded.reduce_job(runtime.jobs.get(job))

    rebuilt = [batch for batch in batches if "uservisits/f4.csv" not in batch]  # the retracted one is read too
    assert sorted(key for batch in rebuilt for key in batch) == [f"uservisits/f{n}.csv" for n in range(4)]
    assert [len(batch) for batch in rebuilt] == [2, 2]
    _, table = runtime.results.current(runtime.jobs.get(job))
    assert table.to_pylist()[0]["visitors"] == 8


def test_entries_batch_by_rows_and_keep_a_pack_together():
    def entry(contribution: str, rows: int, pack: str | None = None) -> dict:
        return {"contribution": contribution, "rows": rows,
                "parts": [pack] if pack else [f"jobs/j/parts/{contribution}/0.arrow"]}

    pack = layout.generation_keys("j", 3).pack
    a, b, c, d = entry("a", 3), entry("b", 2, pack), entry("c", 2, pack), entry("d", 9)
    assert _batches_of_entries([a, b, d, c], 5) == [[a], [b, c], [d]]  # b and c share a pack: 4 rows
    assert _batches_of_entries([a, b, c, d], 100) == [[a, b, c, d]]
    assert _batches_of_entries([], 5) == []
