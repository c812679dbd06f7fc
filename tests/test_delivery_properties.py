"""Property: under any schedule of uploads, overwrites and deletes, with events duplicated, reordered and
dropped, mappers killed and retried, reducers overlapping (their clean-up included), killed at any S3 call,
or losing the response of a write that applied, S3 changing between any two of a reducer's calls, and the
garbage collector running at any age, once the reconcile and the reducer have run:

- the served result is the query evaluated over exactly the objects in the bucket;
- every object the committed state names exists, and no run ever found one missing;
- once the grace period has passed, the collector leaves exactly what the committed state names.

Each example runs on moto with a fake clock that moto stamps objects with too, so "an hour later" is an hour
later for every age test; Tally's thread pools run their tasks in order, so an example is reproducible.
"""
from __future__ import annotations

import contextlib
import functools
import datetime as dt
import logging
import math
import statistics
from concurrent.futures import Future
from decimal import Decimal
from unittest import mock

import boto3
import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from moto import mock_aws

from chalicelib.engine import layout
from chalicelib.engine.fanout import RangeTask
from chalicelib.engine.garbage import GRACE, GarbageCollector
from chalicelib.engine.mapper import INLINE_LIMIT
from chalicelib.engine.reducer import Reducer
from chalicelib.engine.runs import REWRITE_GROUPS
from chalicelib.errors import CommitConflict
from chalicelib.jobs import Job, JobCatalog, load_jobs
from chalicelib.runtime import Runtime
from chalicelib.settings import Settings
from reducers.tables import TABLES

from .conftest import INPUT, STATE, Uploader, csv_rows, query_over_bucket, rankings_rows, uservisits_rows
from .faults import Before, FaultyStore, Killed, LostResponse

USERVISITS = TABLES["uservisits"].format

JOB, SHARDED_JOB, SKETCH_JOB, SCAN_JOB = "bdb-agg-2a", "bdb-agg-2c", "visits-by-country", "bdb-scan-1b"
# min and max cannot be subtracted: a retraction rebuilds the shards it reaches from the retained partials.
EXTREMES = Job(name="extremes", prefix="uservisits/", format=USERVISITS, keys={"ip": "substr(sourceIP, 1, 8)"},
               aggregates={"top": "max(adRevenue)", "low": "min(adRevenue)", "visits": "count()"})
KEYS = ["uservisits/a.csv", "uservisits/b c.csv", "uservisits/ü.csv.gz"]
ROWS = st.lists(st.tuples(st.sampled_from(["1.1.1.1", "1.1.1.2", "22.2.2.2", "33.3.3.3"]),
                          st.sampled_from(["0.5", "1", "2.25", "100.000001"])), min_size=0, max_size=4)

upload = st.tuples(st.just("upload"), st.sampled_from(KEYS), ROWS)
delete = st.tuples(st.just("delete"), st.sampled_from(KEYS))
deliver = st.tuples(st.just("deliver"), st.integers(0, 20), st.booleans())  # which pending event; keep a duplicate
drop = st.tuples(st.just("drop"), st.integers(0, 20))
crash_mapper = st.tuples(st.just("crash_mapper"), st.integers(0, 20), st.integers(1, 3))
# What happens between two of a reducer run's S3 calls (the k-th and the one before; a run makes about 10 to 30):
# a few steps in order, or, most telling, S3 changing and then another run acting on the change while this one
# waits (it may have read what the other then finds stale).
change = st.one_of(upload, delete)
deliver_now = st.tuples(st.just("deliver"), st.integers(0, 20), st.just(False))  # a mapper runs meanwhile
overlap = st.tuples(st.just("overlap"))  # a whole other run, its clean-up included
# Compaction of any window of a shard's runs (from, how many: at least two), whatever the size policy says.
compact = st.tuples(st.just("compact"), st.integers(0, 6), st.integers(2, 5))
MIDRUN = st.one_of(
    st.lists(st.one_of(change, deliver_now, overlap, compact,
                       st.tuples(st.just("collect")),                   # the garbage collector, now
                       st.tuples(st.just("slow"), st.integers(1, 5))),  # minutes pass (a run lives 15 at most)
             min_size=1, max_size=3),
    st.tuples(change, overlap).map(list), st.tuples(change, overlap).map(list),
    st.tuples(change, deliver_now, overlap).map(list),
)
reduce = st.tuples(st.just("reduce"), st.none() | st.tuples(st.integers(1, 16), MIDRUN))
crash_reducer = st.tuples(st.just("crash_reducer"), st.sampled_from(["put_if_absent", "put_if_match", "delete"]),
                          st.booleans(), st.integers(1, 3))
# The write applies, its response is lost, botocore's retry meets the 412 its first attempt caused.
lost_response = st.tuples(st.just("lost_response"), st.sampled_from(["manifest.json", "/results/", "/ledger/",
                                                                     "/garbage/"]))
collect = st.tuples(st.just("collect_after"), st.sampled_from([0, 20, 61, 180]))  # minutes pass, then it runs
# The collector with a reducer run (or S3 changes, or a mapper) between two of its own S3 calls.
collect_while = st.tuples(st.just("collect_while"), st.integers(1, 10),
                          st.lists(st.one_of(st.tuples(st.just("reduce"), st.none()), change, deliver_now),
                                   min_size=1, max_size=2))
reconcile = st.tuples(st.just("reconcile"))
# A compaction with a reducer run, S3 changes or a mapper between two of its S3 calls; or losing the response of
# its manifest write.
compact_while = st.tuples(st.just("compact_while"), st.integers(1, 8), compact,
                          st.lists(st.one_of(st.tuples(st.just("reduce"), st.none()), change, deliver_now, compact),
                                   min_size=1, max_size=2))
lost_compaction = st.tuples(st.just("lost_compaction"), compact)
# A schedule is rounds of: changes to the bucket, some of the pending events handled in any order (others
# stay pending into later rounds: late and reordered), then reducer runs and the like. Rounds make most
# schedules merge state before they change it, which is where retraction, ordering and crash bugs live.
ROUND = st.tuples(
    st.lists(st.one_of(upload, upload, delete), min_size=1, max_size=3),
    st.lists(st.one_of(deliver, deliver, drop, crash_mapper), max_size=5),
    st.lists(st.one_of(reduce, reduce, reduce, crash_reducer, lost_response, collect, collect_while, reconcile,
                       compact, compact_while, lost_compaction),
             min_size=1, max_size=2),
)
SCHEDULES = st.lists(ROUND, min_size=1, max_size=5).map(
    lambda rounds: [step for changes, events, reducers in rounds for step in (*changes, *events, *reducers)])
# Partials carried inline or in parts, spilled several to an object or not; a plain or a versioned bucket; each
# commit appending a run to the shards it changes, or rewriting them (engine/runs.py's small shards).
OPTIONS = st.fixed_dictionaries({"inline_limit": st.sampled_from([0, INLINE_LIMIT]),
                                 "max_groups": st.sampled_from([2, 500_000]), "versioned": st.booleans(),
                                 "rewrite_groups": st.sampled_from([0, 0, REWRITE_GROUPS])})


class FakeClock:
    def __init__(self):
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += dt.timedelta(minutes=minutes)


class RealClock:
    """The time of a store Tally cannot set the clock of: advancing it does nothing."""

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def advance(self, minutes: float) -> None:
        pass


class InOrder:
    """A ThreadPoolExecutor that runs each task when it is submitted: a run's S3 calls then come in one order,
    so "the k-th call" names the same call every time an example is replayed."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - a Future carries it, as the pool's would
            future.set_exception(exc)
        return future

    def map(self, fn, *iterables):
        return [fn(*args) for args in zip(*iterables)]

    def shutdown(self, *args, **kwargs):
        pass


class Alarms(logging.Handler):
    """Records every warning and error of the reducer, the reconcile and the collector: in these schedules
    nothing is ever missing, unusable or lost, so there must be none."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


@functools.cache
def moto_client():
    """One client for every example: each `mock_aws()` starts from an empty S3, and a client costs 0.1 s."""
    return boto3.client("s3", region_name="us-east-1")


@contextlib.contextmanager
def world(job: Job, options: dict, body=None, split_bytes: int = 0, seaweed=None):
    """The world one example runs in: moto on the fake clock, or (`seaweed`: its client) SeaweedFS, a real
    store whose clock Tally cannot move, so there time steps do nothing and the versioned option is off."""
    clock = FakeClock() if seaweed is None else RealClock()
    alarms = Alarms()
    loggers = [logging.getLogger(name) for name in ("tally.reducer", "tally.reconcile", "tally.garbage")]
    with contextlib.ExitStack() as stack:
        for module in ("reducer", "sharded", "garbage"):
            stack.enter_context(mock.patch(f"chalicelib.engine.{module}.ThreadPoolExecutor", InOrder))
        for logger in loggers:
            logger.addHandler(alarms)
            stack.callback(logger.removeHandler, alarms)
        if seaweed is None:
            stack.enter_context(mock_aws())
            stack.enter_context(mock.patch("moto.s3.models.utcnow", lambda: clock.now.replace(tzinfo=None)))
            s3 = moto_client()
            s3.create_bucket(Bucket=INPUT)
            s3.create_bucket(Bucket=STATE)
            if options["versioned"]:
                s3.put_bucket_versioning(Bucket=INPUT, VersioningConfiguration={"Status": "Enabled"})
        else:
            from .seaweed import empty_buckets

            s3 = seaweed
            empty_buckets(s3, INPUT, STATE)
            options = {**options, "versioned": False}
        yield World(s3, job, options, clock, alarms, body, split_bytes)


class World:
    """One schedule's world: S3 and Tally on one fake clock, and the events S3 sent that are not delivered yet."""

    def __init__(self, s3, job: Job, options: dict, clock: FakeClock, alarms: Alarms, body, split_bytes: int):
        self.s3, self.job, self.clock, self.alarms = s3, job, clock, alarms
        self.body = body or (lambda key, rows: uservisits_rows(*rows))
        self.pending: list = []
        # A sharded result has a shard per group (up to 16): the schedules' few groups re-partition it midway.
        self.runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, split_mb=split_bytes / (1 << 20),
                                        shard_groups=1, api_auth="none"),
                               s3_client=s3, dispatch=self.pending.extend, catalog=JobCatalog([job]), clock=clock)
        self.runtime.mapper.inline_limit = options["inline_limit"]
        self.runtime.mapper.max_groups, self.runtime.mapper.block_size = options["max_groups"], 256
        self.rewrite_groups = options.get("rewrite_groups", REWRITE_GROUPS)
        self.runtime.reducer.rewrite_groups = self.rewrite_groups
        self.uploads = Uploader(s3)

    def reducer(self, state=None, input_store=None) -> Reducer:
        return Reducer(self.runtime.jobs, state or self.runtime.state_store, input_store or self.runtime.input_store,
                       self.clock, shard_groups=1, rewrite_groups=self.rewrite_groups)

    def run(self, schedule: list) -> None:
        for step in schedule:
            self.step(step)

    def step(self, step: tuple) -> None:
        kind = step[0]
        if kind == "upload":
            key = self.job.prefix + step[1].removeprefix("uservisits/")
            self.pending.append(self.uploads.put(key, self.body(key, step[2]), compress=key.endswith(".gz")))
        elif kind == "delete":
            self.pending.append(self.uploads.delete(self.job.prefix + step[1].removeprefix("uservisits/")))
        elif kind in ("deliver", "drop", "crash_mapper") and self.pending:
            record = self.pending.pop(step[1] % len(self.pending))
            if kind == "deliver":
                self.handle(record)
                if step[2]:
                    self.pending.append(record)  # at least once: it may come again
            elif kind == "crash_mapper":
                mapper = self.runtime.mapper
                healthy, mapper.state = mapper.state, FaultyStore(self.runtime.state_store, "put", nth=step[2])
                try:
                    self.handle(record)
                except Killed:
                    self.pending.append(record)  # Lambda retries a failed invocation
                finally:
                    mapper.state = healthy
        elif kind == "reduce":
            self.reduce(step[1])
        elif kind == "crash_reducer":
            with contextlib.suppress(Killed):
                self.reducer(FaultyStore(self.runtime.state_store, step[1], after=step[2], nth=step[3])
                             ).reduce_job(self.job)
        elif kind == "lost_response":
            operation = "put_if_absent" if step[1] != "manifest.json" else (
                "put_if_match" if self.runtime.state_store.head(layout.manifest_key(self.job.name)) else
                "put_if_absent")
            with contextlib.suppress(CommitConflict):
                self.reducer(LostResponse(self.runtime.state_store, operation, key_contains=step[1])
                             ).reduce_job(self.job)
        elif kind == "collect_after":
            self.clock.advance(step[1])
            self.runtime.reconciler.collector.collect(self.job.name)
        elif kind == "collect_while":
            _, k, meanwhile = step
            GarbageCollector(Before(self.runtime.state_store, lambda: self.run(meanwhile), nth=k),
                             lambda name: self.runtime.reducer.read_live(self.job), self.clock).collect(self.job.name)
        elif kind == "reconcile":
            self.runtime.reconciler.reconcile(self.job, grace=dt.timedelta(0))
        elif kind == "compact":
            self.compact(step)
        elif kind == "compact_while":
            _, k, compaction, meanwhile = step
            self.compact(compaction, Before(self.runtime.state_store, lambda: self.run(meanwhile), nth=k))
        elif kind == "lost_compaction":
            self.compact(step[1], LostResponse(self.runtime.state_store, "put_if_match", key_contains="manifest.json"))
        elif kind == "overlap":
            with contextlib.suppress(CommitConflict):
                self.reducer().reduce_job(self.job)
        elif kind == "collect":
            self.runtime.reconciler.collector.collect(self.job.name)
        elif kind == "slow":
            self.clock.advance(step[1])

    def handle(self, item) -> None:
        if isinstance(item, RangeTask):
            self.runtime.mapper.map_range(item)
        else:
            self.runtime.mapper.handle(self.uploads.event(item))

    def reduce(self, between) -> None:
        """One reducer run; `between`: (k, step), the step taken just before the run's k-th S3 call."""
        if between is None:
            reducer = self.runtime.reducer
        else:
            k, midrun = between
            counter = {"calls": 0}  # the run's calls on either bucket
            reducer = self.reducer(Before(self.runtime.state_store, lambda: self.run(midrun), nth=k, counter=counter),
                                   Before(self.runtime.input_store, lambda: self.run(midrun), nth=k, counter=counter))
        with contextlib.suppress(CommitConflict):  # lost a race: the next run applies what this one did not
            reducer.reduce_job(self.job)

    def compact(self, step: tuple, state=None) -> None:
        """A compaction of runs [start, start + count) of each shard with two runs or more (start wrapped)."""
        _, start, count = step

        def window(runs: tuple) -> tuple[int, int] | None:
            if len(runs) < 2:
                return None
            first = start % (len(runs) - 1)
            return first, min(len(runs), first + count)

        with contextlib.suppress(CommitConflict):
            self.reducer(state).compact(self.job, window)

    def settle(self) -> None:
        """Whatever events are still undelivered are lost: the reconcile makes up for them, the reducer drains;
        range tasks the reconcile fans out from here on are delivered at once."""
        self.runtime.mapper.dispatch = lambda tasks: [self.runtime.mapper.map_range(task) for task in tasks]
        for _ in range(2):
            self.runtime.reconciler.reconcile(self.job, grace=dt.timedelta(0), range_grace=dt.timedelta(0))
            while self.runtime.reducer.reduce_job(self.job).more_pending:
                pass
        while self.runtime.reducer.compact(self.job):  # as reduce_all does once the inbox is drained
            pass

    def assert_sound(self) -> None:
        """Nothing the committed state names is missing; no run found anything missing or unusable; and once the
        grace has passed, the collector leaves exactly what the committed state names."""
        status = self.runtime.status.status(self.job)
        assert status["idle"] is True, status
        assert self.alarms.records == []
        live = self.runtime.reducer.read_live(self.job).keys
        assert all(self.runtime.state_store.head(key) for key in live)
        self.clock.advance(GRACE.total_seconds() / 60 + 1)
        if isinstance(self.clock, RealClock):  # nothing runs now: what would be old in an hour may go
            GarbageCollector(self.runtime.state_store, lambda name: self.runtime.reducer.read_live(self.job),
                             self.clock, grace=-dt.timedelta(minutes=1)).collect(self.job.name)
        else:
            self.runtime.reconciler.collector.collect(self.job.name)
        state = {o.key for prefix in (layout.parts_prefix, layout.packs_prefix, layout.results_prefix,
                                      layout.ledger_prefix, layout.garbage_prefix, layout.inbox_prefix)
                 for o in self.runtime.state_store.list(prefix(self.job.name))}
        assert state == set(live), (sorted(state - live), sorted(live - state))


def served(runtime, job_name: str = JOB) -> dict[str, Decimal]:
    _, table = runtime.results.current(runtime.jobs.get(job_name))
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


# Each property is a check of one example, run on moto (many examples) and on SeaweedFS (fewer: each S3 call
# is an HTTP round trip there, and its buckets are emptied between examples).
SEAWEEDFS_EXAMPLES = 20


def check_result(schedule, options, seaweed=None) -> None:
    with world(load_jobs("reducers").get(JOB), options, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        assert served(w.runtime) == query_over_bucket(w.s3)
        w.assert_sound()
        assert served(w.runtime) == query_over_bucket(w.s3)


PARTS = {"inline_limit": 0, "max_groups": 2, "versioned": False}
A, B = "uservisits/a.csv", "uservisits/b c.csv"
MAPPED_LONG_AGO = [("upload", A, [("1.1.1.1", "0.5")]), ("deliver", 0, False), ("collect_after", 180)]
# The holes a review found, as schedules that every run tries, besides those the search draws.
HOLES = [
    # a run reads k@E1's parts; k is overwritten; another run finds k@E1 stale and cleans up; the first commits
    [("upload", A, [("1.1.1.1", "0.5")]), ("deliver", 0, False),
     ("reduce", (6, [("upload", A, []), ("overlap",)])), ("reduce", None)],
    # ... and the collector runs right then, on parts mapped three hours ago
    [*MAPPED_LONG_AGO, ("reduce", (6, [("upload", A, []), ("overlap",), ("collect",)])), ("reduce", None)],
    # a reducer applies a marker (commits, then deletes it) between two of the collector's reads
    *([*MAPPED_LONG_AGO, ("collect_while", k, [("reduce", None)]), ("delete", A), ("deliver", 0, False),
       ("reduce", None)] for k in range(1, 10)),
    # the manifest's conditional write applies, its response is lost, the retry meets 412 (first commit, then later)
    [("upload", A, [("1.1.1.1", "0.5")]), ("deliver", 0, False), ("lost_response", "manifest.json"),
     ("upload", B, [("22.2.2.2", "1")]), ("deliver", 0, False), ("lost_response", "manifest.json"),
     ("reduce", None)],
]


RUNS = {**PARTS, "rewrite_groups": 0}  # every commit appends a run to the shards it changes
C = "uservisits/ü.csv.gz"
PILED = [step for key, ip in ((A, "1.1.1.1"), (B, "22.2.2.2"), (C, "33.3.3.3"), (A, "1.1.1.2"))
         for step in (("upload", key, [(ip, "2.25")]), ("deliver", 0, False), ("reduce", None))]  # 4 runs
COMPACTIONS = [
    # A and B are overwritten with as many rows in their groups and other values: delta runs whose groups have
    # no rows left but a revenue; compacting those runs without the oldest must keep them
    [*PILED, ("upload", A, [("1.1.1.2", "0.5")]), ("deliver", 0, False), ("reduce", None),
     ("upload", B, [("22.2.2.2", "1")]), ("deliver", 0, False), ("reduce", None), ("compact", 4, 2),
     ("delete", C), ("deliver", 0, False), ("reduce", None), ("compact", 0, 5)],
    # a reducer commits (appends a run) between two of a compaction's S3 calls, for every call
    *([*PILED, ("compact_while", k, ("compact", 0, 4), [("delete", A), ("deliver", 0, False), ("reduce", None)])]
      for k in range(1, 8)),
    # ... or rewrites the shard from a retraction it cannot subtract, or another compaction takes those runs
    [*PILED, ("compact_while", 3, ("compact", 0, 4), [("compact", 1, 2)]), ("reduce", None)],
    # the compaction's manifest write applies and its response is lost
    [*PILED, ("lost_compaction", ("compact", 0, 3)), ("delete", C), ("deliver", 0, False), ("reduce", None)],
]


def trying_the_holes(test):
    for schedule in HOLES:
        test = example(schedule, PARTS)(test)
    for schedule in COMPACTIONS:
        test = example(schedule, RUNS)(test)
    return test


@trying_the_holes
@given(SCHEDULES, OPTIONS)
def test_after_any_schedule_the_result_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_result(schedule, options)


# Longer schedules, each commit appending a run: results of many runs, compacted at any point.
PILING_UP = st.lists(ROUND, min_size=4, max_size=8).map(
    lambda rounds: [step for changes, events, reducers in rounds for step in (*changes, *events, *reducers)])
APPENDING = OPTIONS.map(lambda options: {**options, "rewrite_groups": 0})


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(PILING_UP, APPENDING)
def test_with_runs_piling_up_and_compacted_at_any_point_the_result_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_result(schedule, options)


@settings(max_examples=max(10, settings.default.max_examples // 8))
@given(PILING_UP, APPENDING)
def test_with_runs_piling_up_and_compacted_at_any_point_a_sketch_result_is_the_query_over_the_bucket(
        schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_sketch_result(schedule, options)


@pytest.mark.seaweedfs
@settings(max_examples=2 * SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS)
def test_on_seaweedfs_after_any_schedule_the_result_is_the_query_over_the_bucket(seaweed_s3, schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_result(schedule, options, seaweed_s3)


def check_sharded_result(schedule, options, seaweed=None) -> None:
    """bdb-agg-2c keeps its result in up to 16 shards, growing into them as its groups grow, each commit rewriting
    only those its changes reach: overlapping reducers, crashes between shard writes and the manifest,
    re-partitions, retractions, all end as the query over the bucket."""
    job = load_jobs("reducers").get(SHARDED_JOB)
    assert job.shards > 1
    with world(job, options, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        assert served(w.runtime, SHARDED_JOB) == query_over_bucket(w.s3, 12)
        w.assert_sound()


@settings(max_examples=max(10, settings.default.max_examples // 4))
@trying_the_holes
@given(SCHEDULES, OPTIONS)
def test_after_any_schedule_a_sharded_result_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_sharded_result(schedule, options)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS)
def test_on_seaweedfs_after_any_schedule_a_sharded_result_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                        options):
    note(f"schedule: {schedule} options: {options}")
    check_sharded_result(schedule, options, seaweed_s3)


def extremes_over_bucket(s3) -> dict[str, tuple[Decimal, Decimal, int]]:
    """SELECT SUBSTR(sourceIP, 1, 8), MAX(adRevenue), MIN(adRevenue), COUNT(*) GROUP BY 1, by hand."""
    values: dict[str, list[Decimal]] = {}
    for row in csv_rows(s3):
        values.setdefault(row[0][:8], []).append(Decimal(row[3]))
    return {ip: (max(v), min(v), len(v)) for ip, v in values.items()}


def check_min_max_result(schedule, options, seaweed=None) -> None:
    """min and max cannot be subtracted: every retraction rebuilds the shards it reaches from the retained
    partials of the live versions, which is where a deleted part would show."""
    with world(EXTREMES, options, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        _, table = w.runtime.results.current(EXTREMES)
        assert {row["ip"]: (row["top"], row["low"], row["visits"]) for row in table.to_pylist()} == \
            extremes_over_bucket(w.s3)
        w.assert_sound()


@settings(max_examples=max(10, settings.default.max_examples // 2))
@trying_the_holes
@given(SCHEDULES, OPTIONS)
def test_after_any_schedule_a_min_max_result_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_min_max_result(schedule, options)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS)
def test_on_seaweedfs_after_any_schedule_a_min_max_result_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                        options):
    note(f"schedule: {schedule} options: {options}")
    check_min_max_result(schedule, options, seaweed_s3)


def distinct_visitors_over_bucket(s3) -> dict[str, tuple[int, float | None]]:
    """Per country: COUNT(DISTINCT sourceIP) and STDDEV_SAMP(adRevenue), by hand. Tens of rows: the HLL is exact."""
    rows: dict[str, list] = {}
    for row in csv_rows(s3):
        rows.setdefault(row[5], []).append((row[0], Decimal(row[3])))
    return {country: (len({ip for ip, _ in values}),
                      float(statistics.stdev([r for _, r in values])) if len(values) > 1 else None)
            for country, values in rows.items()}


def check_sketch_result(schedule, options, seaweed=None) -> None:
    """A job whose sketches cannot be retracted: deletes and overwrites rebuild it from the retained partials,
    and it still ends as the query over the bucket (here exact: tens of rows)."""
    with world(load_jobs("reducers").get(SKETCH_JOB), options, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        _, table = w.runtime.results.current(w.job)
        got = {row["countryCode"]: (row["visitors"], row["revenue_stddev"]) for row in table.to_pylist()}
        expected = distinct_visitors_over_bucket(w.s3)
        assert got.keys() == expected.keys()
        for country, (visitors, stddev) in expected.items():
            assert got[country][0] == visitors, (country, got, expected)
            assert (got[country][1] is None) == (stddev is None), (country, got, expected)
            assert stddev is None or math.isclose(got[country][1], stddev, rel_tol=1e-9), (country, got, expected)
        w.assert_sound()


@settings(max_examples=max(10, settings.default.max_examples // 4))
@trying_the_holes
@given(SCHEDULES, OPTIONS)
def test_after_any_schedule_a_sketch_result_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_sketch_result(schedule, options)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS)
def test_on_seaweedfs_after_any_schedule_a_sketch_result_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                       options):
    note(f"schedule: {schedule} options: {options}")
    check_sketch_result(schedule, options, seaweed_s3)


def check_split_result(schedule, options, split, seaweed=None) -> None:
    """Objects above the split size fan out into range tasks, which the schedule delivers like events: in any
    order, twice, crashed and retried, or dropped (then the reconcile maps the version again)."""
    with world(load_jobs("reducers").get(JOB), options, split_bytes=split, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        assert served(w.runtime) == query_over_bucket(w.s3)
        w.assert_sound()


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(SCHEDULES, OPTIONS, st.sampled_from([64, 160]))
def test_after_any_schedule_with_objects_split_in_ranges_the_result_is_the_query_over_the_bucket(
        schedule, options, split):
    note(f"schedule: {schedule} options: {options}")
    check_split_result(schedule, options, split)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS, st.sampled_from([64, 160]))
def test_on_seaweedfs_after_any_schedule_with_objects_split_in_ranges_the_result_is_the_query_over_the_bucket(
        seaweed_s3, schedule, options, split):
    note(f"schedule: {schedule} options: {options}")
    check_split_result(schedule, options, split, seaweed_s3)


# A scan job on the same machinery: the served output rows are exactly the query's rows over the bucket.
RANKS = {"0.5": 5, "1": 100, "2.25": 101, "100.000001": 5000}  # the schedule's values, as pageRanks


def scan_body(key: str, rows) -> str:
    return rankings_rows(*[(f"{ip}/{key[-8:]}", RANKS[revenue]) for ip, revenue in rows])


def scan_over_bucket(s3) -> list[tuple[str, int]]:
    """SELECT pageURL, pageRank FROM rankings WHERE pageRank > 100, computed with the csv module."""
    return sorted((row[0], int(row[1])) for row in csv_rows(s3) if int(row[1]) > 100)


def served_scan(runtime) -> list[tuple[str, int]]:
    from chalicelib.engine.scan_results import ScanQuery

    job, rows, cursor = runtime.jobs.get(SCAN_JOB), [], None
    while True:
        page = runtime.scan_results.page(job, ScanQuery(limit=3, cursor=cursor))
        rows += [(row["pageURL"], row["pageRank"]) for row in page["rows"]]
        if page["next_cursor"] is None:
            return sorted(rows)
        cursor = ScanQuery.from_params({"cursor": page["next_cursor"]}).cursor


def check_scan_output(schedule, options, seaweed=None) -> None:
    with world(load_jobs("reducers").get(SCAN_JOB), options, scan_body, seaweed=seaweed) as w:
        w.run(schedule)
        w.settle()

        assert served_scan(w.runtime) == scan_over_bucket(w.s3)
        w.assert_sound()


@settings(max_examples=max(10, settings.default.max_examples // 3))
@trying_the_holes
@given(SCHEDULES, OPTIONS)
def test_after_any_schedule_a_scan_jobs_output_is_the_query_over_the_bucket(schedule, options):
    note(f"schedule: {schedule} options: {options}")
    check_scan_output(schedule, options)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, OPTIONS)
def test_on_seaweedfs_after_any_schedule_a_scan_jobs_output_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                         options):
    note(f"schedule: {schedule} options: {options}")
    check_scan_output(schedule, options, seaweed_s3)
