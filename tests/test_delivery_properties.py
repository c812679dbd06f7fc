"""Property: under any schedule of uploads, overwrites and deletes, with events duplicated, reordered and
dropped, reducers overlapping and any process killed at any S3 call, once the reconcile and the reducer have
run the served result equals the query evaluated over exactly the objects in the bucket."""
from __future__ import annotations

import csv
import io
import math
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from chalicelib.engine.fanout import RangeTask
from chalicelib.engine.mapper import INLINE_LIMIT
from chalicelib.engine.reducer import Reducer, ReduceReport
from chalicelib.errors import CommitConflict
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings

from .conftest import INPUT, STATE, Uploader, fresh_buckets, rankings_rows, uservisits_rows
from .faults import FaultyStore, Killed

JOB = "bdb-agg-2a"
SHARDED_JOB = "bdb-agg-2c"
KEYS = ["uservisits/a.csv", "uservisits/b c.csv", "uservisits/ü.csv.gz"]
ROWS = st.lists(st.tuples(st.sampled_from(["1.1.1.1", "1.1.1.2", "22.2.2.2", "33.3.3.3"]),
                          st.sampled_from(["0.5", "1", "2.25", "100.000001"])), min_size=0, max_size=4)

upload = st.tuples(st.just("upload"), st.sampled_from(KEYS), ROWS)
delete = st.tuples(st.just("delete"), st.sampled_from(KEYS))
deliver = st.tuples(st.just("deliver"), st.integers(0, 20), st.booleans())  # which pending event; keep a duplicate
drop = st.tuples(st.just("drop"), st.integers(0, 20))
reduce = st.tuples(st.just("reduce"))
overlap = st.tuples(st.just("overlap"))
crash_reducer = st.tuples(st.just("crash_reducer"), st.sampled_from(["put_if_absent", "put_if_match", "delete"]),
                          st.booleans(), st.integers(1, 3))
crash_mapper = st.tuples(st.just("crash_mapper"), st.integers(0, 20), st.integers(1, 3))
# A schedule is rounds of: changes to the bucket, some of the pending events handled in any order (others
# stay pending into later rounds: late and reordered), then a reducer run. Rounds make most schedules merge
# state before they change it, which is where retraction, ordering and crash bugs live.
ROUND = st.tuples(
    st.lists(st.one_of(upload, upload, delete), min_size=1, max_size=3),
    st.lists(st.one_of(deliver, deliver, drop, crash_mapper), max_size=5),
    st.lists(st.one_of(reduce, overlap, crash_reducer), min_size=1, max_size=2),
)
SCHEDULES = st.lists(ROUND, min_size=1, max_size=5).map(
    lambda rounds: [step for changes, events, reducers in rounds for step in (*changes, *events, *reducers)])


def query_over_bucket(s3, prefix_length: int = 8) -> dict[str, Decimal]:
    """SELECT SUBSTR(sourceIP, 1, prefix_length), SUM(adRevenue) GROUP BY 1, computed with the csv module."""
    import gzip

    totals: dict[str, Decimal] = {}
    for item in s3.list_objects_v2(Bucket=INPUT).get("Contents", []):
        body = s3.get_object(Bucket=INPUT, Key=item["Key"])["Body"].read()
        text = (gzip.decompress(body) if item["Key"].endswith(".gz") and body else body).decode()
        for row in csv.reader(io.StringIO(text)):
            prefix = row[0][:prefix_length]
            totals[prefix] = totals.get(prefix, Decimal(0)) + Decimal(row[3])
    return totals


def served(runtime, job_name: str = JOB) -> dict[str, Decimal]:
    _, table = runtime.results.current(runtime.jobs.get(job_name))
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


def distinct_visitors_over_bucket(s3) -> dict[str, tuple[int, float | None]]:
    """Per country: COUNT(DISTINCT sourceIP) and STDDEV_SAMP(adRevenue), by hand. Tens of rows: the HLL is exact."""
    import gzip
    import statistics

    rows: dict[str, list] = {}
    for item in s3.list_objects_v2(Bucket=INPUT).get("Contents", []):
        body = s3.get_object(Bucket=INPUT, Key=item["Key"])["Body"].read()
        text = (gzip.decompress(body) if item["Key"].endswith(".gz") and body else body).decode()
        for row in csv.reader(io.StringIO(text)):
            rows.setdefault(row[5], []).append((row[0], Decimal(row[3])))
    return {country: (len({ip for ip, _ in values}),
                      float(statistics.stdev([r for _, r in values])) if len(values) > 1 else None)
            for country, values in rows.items()}


def served_visitors(runtime) -> dict[str, tuple[int, float | None]]:
    _, table = runtime.results.current(runtime.jobs.get("visits-by-country"))
    return {row["countryCode"]: (row["visitors"], row["revenue_stddev"]) for row in table.to_pylist()}


def settle(runtime, job) -> None:
    """Whatever events are still undelivered are lost: the reconcile makes up for them, the reducer drains."""
    for _ in range(2):
        runtime.reconciler.reconcile(job, grace=timedelta(0), range_grace=timedelta(0))
        while runtime.reducer.reduce_job(job).more_pending:
            pass


def run(schedule, s3, inline_limit: int, job_name: str = JOB, body=lambda key, rows: uservisits_rows(*rows),
        split_bytes: int = 0) -> Runtime:
    """Pending are S3's event records and, with a split size, the range tasks of large objects: delivered,
    duplicated, dropped and crashed the same way."""
    pending: list = []
    # A sharded result has a shard per group (up to 16): the schedules' few groups re-partition it mid-schedule.
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, split_mb=split_bytes / (1 << 20),
                               shard_groups=1), s3_client=s3, dispatch=pending.extend)
    runtime.mapper.inline_limit = inline_limit
    job, uploads = runtime.jobs.get(job_name), Uploader(s3)

    def handle(item) -> None:
        if isinstance(item, RangeTask):
            runtime.mapper.map_range(item)
        else:
            runtime.mapper.handle(uploads.event(item))

    prefix = job.prefix
    for step in schedule:
        kind = step[0]
        if kind == "upload":
            key = prefix + step[1].removeprefix("uservisits/")
            pending.append(uploads.put(key, body(key, step[2]), compress=key.endswith(".gz")))
        elif kind == "delete":
            pending.append(uploads.delete(prefix + step[1].removeprefix("uservisits/")))
        elif kind in ("deliver", "drop", "crash_mapper") and pending:
            record = pending.pop(step[1] % len(pending))
            if kind == "deliver":
                handle(record)
                if step[2]:
                    pending.append(record)  # at least once: it may come again
            elif kind == "crash_mapper":
                mapper_store, runtime.mapper.state = runtime.mapper.state, FaultyStore(
                    runtime.state_store, "put", nth=step[2])
                try:
                    handle(record)
                except Killed:
                    pending.append(record)  # Lambda retries a failed invocation
                finally:
                    runtime.mapper.state = mapper_store
        elif kind == "reduce":
            runtime.reducer.reduce_job(job)
        elif kind == "overlap":
            other = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now,
                            shard_groups=runtime.settings.shard_groups)
            first, second = runtime.reducer.gather(job), other.gather(job)
            for reducer, seen in ((other, second), (runtime.reducer, first)):
                plan = seen.plan()
                if plan.changes_result:
                    try:
                        reducer.execute(job, seen, plan, ReduceReport(job.name))
                    except CommitConflict:
                        pass
        elif kind == "crash_reducer":
            faulty = Reducer(runtime.jobs, FaultyStore(runtime.state_store, step[1], after=step[2], nth=step[3]),
                             runtime.input_store, utc_now, shard_groups=runtime.settings.shard_groups)
            try:
                faulty.reduce_job(job)
            except Killed:
                pass
    return runtime


# SeaweedFS, a real object store, runs the same properties on fewer examples: each S3 call is an HTTP round trip
# there (and the buckets are emptied between examples), where moto's in-process mock is a function call.
SEAWEEDFS_EXAMPLES = 20


# Partials in their own parts, or carried inline by markers and kept in packs by the reducer.
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_after_any_schedule_the_result_is_the_query_over_the_bucket(schedule, inline_limit):
    with fresh_buckets() as s3:
        check_result(s3, schedule, inline_limit)


@pytest.mark.seaweedfs
@settings(max_examples=2 * SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_on_seaweedfs_after_any_schedule_the_result_is_the_query_over_the_bucket(seaweed_s3, schedule, inline_limit):
    with fresh_buckets(seaweed_s3) as s3:
        check_result(s3, schedule, inline_limit)


def check_result(s3, schedule, inline_limit) -> None:
    note(f"schedule: {schedule}")
    runtime = run(schedule, s3, inline_limit)
    # Whatever events are still undelivered are lost: the reconcile must make up for them.
    job = runtime.jobs.get(JOB)
    settle(runtime, job)

    assert served(runtime) == query_over_bucket(s3)
    assert runtime.status.status(job)["idle"] is True


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_after_any_schedule_a_sharded_result_is_the_query_over_the_bucket(schedule, inline_limit):
    """bdb-agg-2c keeps its result in up to 16 shards, growing into them as its groups grow, each commit rewriting
    only those its changes reach: overlapping reducers, crashes between shard writes and the manifest,
    re-partitions, retractions, all end as the query over the bucket."""
    with fresh_buckets() as s3:
        check_sharded_result(s3, schedule, inline_limit)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_on_seaweedfs_after_any_schedule_a_sharded_result_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                        inline_limit):
    with fresh_buckets(seaweed_s3) as s3:
        check_sharded_result(s3, schedule, inline_limit)


def check_sharded_result(s3, schedule, inline_limit) -> None:
    note(f"schedule: {schedule}")
    runtime = run(schedule, s3, inline_limit, SHARDED_JOB)
    job = runtime.jobs.get(SHARDED_JOB)
    assert job.shards > 1
    settle(runtime, job)

    assert served(runtime, SHARDED_JOB) == query_over_bucket(s3, 12)
    assert runtime.status.status(job)["idle"] is True


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_after_any_schedule_a_sketch_result_is_the_query_over_the_bucket(schedule, inline_limit):
    """The same schedules for a job whose sketches cannot be retracted: deletes and overwrites rebuild it from
    the retained partials, and it still ends as the query over the bucket (here exact: tens of rows)."""
    with fresh_buckets() as s3:
        check_sketch_result(s3, schedule, inline_limit)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, st.sampled_from([0, INLINE_LIMIT]))
def test_on_seaweedfs_after_any_schedule_a_sketch_result_is_the_query_over_the_bucket(seaweed_s3, schedule,
                                                                                       inline_limit):
    with fresh_buckets(seaweed_s3) as s3:
        check_sketch_result(s3, schedule, inline_limit)


def check_sketch_result(s3, schedule, inline_limit) -> None:
    note(f"schedule: {schedule}")
    runtime = run(schedule, s3, inline_limit, "visits-by-country")
    job = runtime.jobs.get("visits-by-country")
    settle(runtime, job)

    expected, got = distinct_visitors_over_bucket(s3), served_visitors(runtime)
    assert got.keys() == expected.keys()
    for country, (visitors, stddev) in expected.items():
        assert got[country][0] == visitors, (country, got, expected)
        assert (got[country][1] is None) == (stddev is None), (country, got, expected)
        assert stddev is None or math.isclose(got[country][1], stddev, rel_tol=1e-9), (country, got, expected)
    assert runtime.status.status(job)["idle"] is True


@settings(max_examples=max(10, settings().max_examples // 2))
@given(SCHEDULES, st.sampled_from([64, 160]))
def test_after_any_schedule_with_objects_split_in_ranges_the_result_is_the_query_over_the_bucket(schedule, split):
    """Objects above the split size fan out into range tasks, which the schedule delivers like events: in any
    order, twice, crashed and retried, or dropped (then the reconcile maps the version again)."""
    with fresh_buckets() as s3:
        check_split_result(s3, schedule, split)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES, st.sampled_from([64, 160]))
def test_on_seaweedfs_after_any_schedule_with_objects_split_in_ranges_the_result_is_the_query_over_the_bucket(
        seaweed_s3, schedule, split):
    with fresh_buckets(seaweed_s3) as s3:
        check_split_result(s3, schedule, split)


def check_split_result(s3, schedule, split) -> None:
    note(f"schedule: {schedule}")
    runtime = run(schedule, s3, INLINE_LIMIT, split_bytes=split)
    job = runtime.jobs.get(JOB)
    # What is still pending is lost; what the reconcile fans out from here on is delivered at once.
    runtime.mapper.dispatch = lambda tasks: [runtime.mapper.map_range(task) for task in tasks]
    settle(runtime, job)

    assert served(runtime) == query_over_bucket(s3)
    assert runtime.status.status(job)["idle"] is True
    assert not list(runtime.state_store.list(f"jobs/{JOB}/inbox/"))


# A scan job on the same machinery: the served output rows are exactly the query's rows over the bucket.
SCAN_JOB = "bdb-scan-1b"
RANKS = {"0.5": 5, "1": 100, "2.25": 101, "100.000001": 5000}  # the schedule's values, as pageRanks


def scan_body(key: str, rows) -> str:
    return rankings_rows(*[(f"{ip}/{key[-8:]}", RANKS[revenue]) for ip, revenue in rows])


def scan_over_bucket(s3) -> list[tuple[str, int]]:
    """SELECT pageURL, pageRank FROM rankings WHERE pageRank > 100, computed with the csv module."""
    import gzip

    rows = []
    for item in s3.list_objects_v2(Bucket=INPUT).get("Contents", []):
        body = s3.get_object(Bucket=INPUT, Key=item["Key"])["Body"].read()
        text = (gzip.decompress(body) if item["Key"].endswith(".gz") and body else body).decode()
        rows += [(row[0], int(row[1])) for row in csv.reader(io.StringIO(text)) if int(row[1]) > 100]
    return sorted(rows)


def served_scan(runtime) -> list[tuple[str, int]]:
    from chalicelib.engine.scan_results import ScanQuery

    job, rows, cursor = runtime.jobs.get(SCAN_JOB), [], None
    while True:
        page = runtime.scan_results.page(job, ScanQuery(limit=3, cursor=cursor))
        rows += [(row["pageURL"], row["pageRank"]) for row in page["rows"]]
        if page["next_cursor"] is None:
            return sorted(rows)
        cursor = ScanQuery.from_params({"cursor": page["next_cursor"]}).cursor


@settings(max_examples=max(10, settings().max_examples // 3))  # ~30 s in the dev profile
@given(SCHEDULES)
def test_after_any_schedule_a_scan_jobs_output_is_the_query_over_the_bucket(schedule):
    with fresh_buckets() as s3:
        check_scan_output(s3, schedule)


@pytest.mark.seaweedfs
@settings(max_examples=SEAWEEDFS_EXAMPLES)
@given(SCHEDULES)
def test_on_seaweedfs_after_any_schedule_a_scan_jobs_output_is_the_query_over_the_bucket(seaweed_s3, schedule):
    with fresh_buckets(seaweed_s3) as s3:
        check_scan_output(s3, schedule)


def check_scan_output(s3, schedule) -> None:
    note(f"schedule: {schedule}")
    runtime = run(schedule, s3, INLINE_LIMIT, SCAN_JOB, scan_body)
    job = runtime.jobs.get(SCAN_JOB)
    settle(runtime, job)

    assert served_scan(runtime) == scan_over_bucket(s3)
    assert runtime.status.status(job)["idle"] is True
