"""Large objects: an uncompressed text object above the split size is mapped as byte ranges in parallel, and
the served result is the query over the bucket, exactly, however the ranges' tasks are delivered."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from chalicelib.engine import layout
from chalicelib.engine.fanout import RangeTask
from chalicelib.engine.reconcile import Reconciler
from chalicelib.jobs import CsvFormat, Job, JobCatalog, load_jobs
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings

from .conftest import INPUT, STATE, Uploader, collect_garbage, rankings_rows, uservisits_rows
from .faults import FaultyStore, Killed
from .test_delivery_properties import SCAN_JOB, query_over_bucket, scan_over_bucket, served_scan

JOB = "bdb-agg-2a"
SPLIT = 1024  # bytes: small objects are split into tens of ranges


class Fanned:
    """Tally with a small split size whose range tasks are held, to be delivered in the test's own order."""

    def __init__(self, s3, split_bytes: int = SPLIT, jobs: JobCatalog | None = None):
        self.tasks: list[RangeTask] = []
        self.runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, split_mb=split_bytes / (1 << 20)),
                               s3_client=s3, dispatch=self.tasks.extend)
        if jobs is not None:
            self.runtime.__dict__["jobs"] = jobs  # before the mapper and reducer are built
        self.uploads = Uploader(s3)

    def put(self, key: str, body: str) -> list[RangeTask]:
        """Upload and deliver its event: the tasks it fanned out (also left in self.tasks)."""
        before = len(self.tasks)
        outcomes = self.runtime.mapper.handle(self.uploads.event(self.uploads.put(key, body)))
        assert {o.outcome for o in outcomes} == {"fanned_out"}
        return self.tasks[before:]

    def deliver(self, tasks) -> list[str]:
        return [o.outcome for task in tasks for o in self.runtime.mapper.map_range(task)]

    def reduce(self, job: str = JOB):
        return self.runtime.reducer.reduce_job(self.runtime.jobs.get(job))

    def served(self) -> dict[str, Decimal]:
        _, table = self.runtime.results.current(self.runtime.jobs.get(JOB))
        return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))

    def status(self, job: str = JOB) -> dict:
        return self.runtime.status.status(self.runtime.jobs.get(job))

    def inbox(self, job: str = JOB) -> list[str]:
        return [layout.id_of(o.key) for o in self.runtime.state_store.list(layout.inbox_prefix(job))]


@pytest.fixture
def fanned(s3) -> Fanned:
    return Fanned(s3)


def visits(count: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return uservisits_rows(*[(f"{rng.randint(1, 40)}.{rng.randint(0, 9)}.0.{i % 7}", f"{rng.randint(0, 10**6) / 1000}")
                             for i in range(count)])


def test_a_large_object_fanned_out_and_delivered_in_any_order_twice_is_counted_once(fanned, s3):
    tasks = fanned.put("uservisits/big.csv", visits(300))
    assert len(tasks) > 20 and [t.index for t in tasks] == list(range(len(tasks)))
    assert all(t.count == len(tasks) for t in tasks) and tasks[-1].end == tasks[0].size

    deliveries = tasks + tasks[::3]  # at least once: some come twice
    random.Random(4).shuffle(deliveries)
    for start in range(0, len(deliveries), 7):  # reducer runs in between see incomplete sets
        assert set(fanned.deliver(deliveries[start:start + 7])) == {"mapped"}
        fanned.reduce()

    assert fanned.served() == query_over_bucket(s3)
    assert fanned.inbox() == [] and fanned.status()["idle"] is True


def test_ranges_read_by_several_ranged_gets_in_flight_own_the_same_lines(fanned, s3):
    fanned.runtime.mapper.prefetch_chunk = 100  # a 1 KiB range is read as ~10 ranged GETs, 4 in flight
    tasks = fanned.put("uservisits/big.csv", visits(300, seed=2))
    assert set(fanned.deliver(tasks[::-1])) == {"mapped"}
    fanned.reduce()

    assert fanned.served() == query_over_bucket(s3)
    assert fanned.status()["objects"]["merged"] == 1


def test_until_its_last_range_lands_an_object_is_pending_and_the_result_unchanged(fanned, s3):
    tasks = fanned.put("uservisits/big.csv", visits(100))
    fanned.deliver(tasks[1:])
    report = fanned.reduce()

    assert report.merged == 0 and fanned.served() == {}
    assert len(fanned.inbox()) == len(tasks) - 1  # the ranges wait for their sibling
    status = fanned.status()
    assert status["idle"] is False and status["partials_pending"] == 1 and status["objects"]["waiting"] == 1

    fanned.deliver(tasks[:1])
    assert fanned.reduce().merged == 1 and fanned.served() == query_over_bucket(s3)


def test_a_range_that_crashed_while_writing_is_retried_and_counted_once(fanned, s3):
    tasks = fanned.put("uservisits/big.csv", visits(100))
    store, fanned.runtime.mapper.state = fanned.runtime.mapper.state, FaultyStore(
        fanned.runtime.state_store, "put", nth=2)  # its part is written, then the process dies
    with pytest.raises(Killed):
        fanned.deliver(tasks[:1])
    fanned.runtime.mapper.state = store

    fanned.deliver(tasks)  # the retry, and the others
    fanned.reduce()
    assert fanned.served() == query_over_bucket(s3)


def test_a_set_of_ranges_longer_than_the_reducers_batch_is_not_cut_for_ever(fanned, s3):
    """A version's range markers sort together; the batch ends after the last one, not in the middle of them
    (cut there, the same incomplete half would be gathered on every run)."""
    fanned.runtime.reducer.batch = 3
    tasks = fanned.put("uservisits/big.csv", visits(100))
    fanned.deliver(tasks)
    fanned.runtime.mapper.handle(fanned.uploads.event(fanned.uploads.put("uservisits/small.csv", visits(3))))

    runs = 1
    while fanned.reduce().more_pending:
        runs += 1
    assert runs <= 2 and fanned.inbox() == [] and fanned.served() == query_over_bucket(s3)


def test_newer_markers_are_applied_while_a_larger_backlog_of_unfinished_ranges_waits(fanned, s3):
    """The batch is 3 markers; the inbox starts with the many ranges of a large object still missing one.
    A small object's marker, listed after them, is applied on the next run all the same."""
    fanned.runtime.reducer.batch = 3
    tasks = fanned.put("uservisits/big.csv", visits(100))
    fanned.deliver(tasks[1:])
    big = layout.contribution_of_marker(fanned.inbox()[0])
    body = visits(3, seed=9)
    etag = hashlib.md5(body.encode()).hexdigest()
    small = next(key for key in (f"uservisits/small-{n}.csv" for n in range(100))
                 if layout.contribution_id(key, etag) > big)  # listed after the big object's ranges
    fanned.runtime.mapper.handle(fanned.uploads.event(fanned.uploads.put(small, body)))

    assert fanned.reduce().merged == 1
    assert fanned.status()["objects"]["merged"] == 1 and fanned.status()["partials_pending"] == 1

    fanned.deliver(tasks[:1])
    while fanned.reduce().more_pending:
        pass
    assert fanned.served() == query_over_bucket(s3) and fanned.inbox() == []


def test_an_overwrite_while_ranges_are_in_flight_ends_with_the_new_version_only(fanned, s3):
    old = fanned.put("uservisits/big.csv", visits(100, seed=1))
    fanned.deliver(old[:3])
    fanned.reduce()  # incomplete, and still current: waits
    new = fanned.put("uservisits/big.csv", visits(120, seed=2))

    assert set(fanned.deliver(old[3:])) == {"superseded"}  # pinned to the old ETag: 412, no marker
    fanned.deliver(new)
    fanned.reduce()

    assert fanned.served() == query_over_bucket(s3)
    assert fanned.inbox() == []
    contribution = layout.contribution_id("uservisits/big.csv", new[0].etag)
    collect_garbage(fanned.runtime, JOB)
    parts = {layout.contribution_of_part(o.key) for o in fanned.runtime.state_store.list(layout.parts_prefix(JOB))}
    assert parts == {contribution}  # the old version's range parts were deleted


def test_a_lost_range_is_mapped_again_by_the_reconcile_once_it_is_overdue(fanned, s3):
    tasks = fanned.put("uservisits/big.csv", visits(100))
    fanned.deliver(tasks[:-1])  # the last one failed all its attempts
    fanned.reduce()
    job, now = fanned.runtime.jobs.get(JOB), utc_now()
    runtime = fanned.runtime

    def reconcile_at(moment: dt.datetime):
        return Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                          lambda: moment).reconcile(job, grace=dt.timedelta(0))

    assert reconcile_at(now).mapped == []  # its other ranges may still be in flight
    assert fanned.status()["idle"] is False  # pending, not lost
    redone = reconcile_at(now + dt.timedelta(minutes=11))
    assert [o.outcome for o in redone.mapped] == ["fanned_out"]

    fanned.deliver(fanned.tasks[len(tasks):])
    fanned.reduce()
    assert fanned.served() == query_over_bucket(s3) and fanned.status()["idle"] is True


def test_a_range_boundary_exactly_at_a_newline_gives_each_range_its_own_rows(fanned, s3):
    row = "1.1.1.1,http://e.com/,2001-02-03,1.5,Mozilla,USA,USA-EN,w,{:05d}\n"
    assert len(row.format(0)) == 64  # 16 rows in each 1 KB range, the last ending on the boundary
    tasks = fanned.put("uservisits/aligned.csv", "".join(row.format(i) for i in range(64)))
    fanned.deliver(tasks)

    markers = [json.loads(fanned.runtime.state_store.get(layout.inbox_key(JOB, m))[0]) for m in fanned.inbox()]
    assert sorted(m["range"][0] for m in markers) == [0, 1, 2, 3] and {m["rows"] for m in markers} == {16}
    fanned.reduce()
    assert fanned.served() == {"1.1.1.1": Decimal("96")}


def test_a_row_longer_than_a_range_is_read_once_by_the_range_it_starts_in(fanned, s3):
    long_row = uservisits_rows(("9.9.9.9", "7")).replace("word", "w" * 3000)  # spans three ranges
    tasks = fanned.put("uservisits/long.csv", visits(20) + long_row + visits(20, seed=3))
    assert len(tasks) >= 4
    fanned.deliver(tasks)
    fanned.reduce()
    assert fanned.served() == query_over_bucket(s3) and fanned.served()["9.9.9.9"] == Decimal(7)


HEADED = Job(name="by-name", prefix="headed/", format=CsvFormat(columns={"name": "string", "amount": "int64"},
                                                                 header=True),
             keys={"name": "name"}, aggregates={"rows": "count()", "amount": "sum(amount)"})


def test_a_csv_header_is_skipped_once_not_counted_nor_taken_from_later_ranges(s3):
    fanned = Fanned(s3, split_bytes=256, jobs=JobCatalog([HEADED]))
    body = "name,amount\n" + "".join(f"{'ab'[i % 2]},{i}\n" for i in range(400))
    tasks = fanned.put("headed/data.csv", body)
    assert len(tasks) > 5
    fanned.deliver(tasks)
    fanned.reduce("by-name")

    _, table = fanned.runtime.results.current(HEADED)
    assert {r["name"]: (r["rows"], r["amount"]) for r in table.to_pylist()} == {
        "a": (200, sum(range(0, 400, 2))), "b": (200, sum(range(1, 400, 2)))}
    assert fanned.status("by-name")["bad_rows_skipped"] == 0


def test_compressed_objects_and_objects_below_the_split_size_are_mapped_whole(fanned, s3):
    uploads = fanned.uploads
    outcomes = fanned.runtime.mapper.handle(uploads.event(
        uploads.put("uservisits/big.csv.gz", visits(300), compress=True),
        uploads.put("uservisits/small.csv", visits(5))))
    assert {o.outcome for o in outcomes} == {"mapped"} and fanned.tasks == []


def test_without_a_dispatcher_the_ranges_are_mapped_in_process(s3):
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, split_mb=SPLIT / (1 << 20)), s3_client=s3)
    uploads = Uploader(s3)
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/big.csv", visits(100))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    _, table = runtime.results.current(runtime.jobs.get(JOB))
    assert dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist())) \
        == query_over_bucket(s3)


def test_the_map_range_handler_maps_the_task_it_is_invoked_with(runtime, uploads, s3):
    import app
    from chalice.test import Client

    runtime.__dict__["mapper"] = Fanned(s3).runtime.mapper
    record = uploads.put("uservisits/big.csv", visits(40))
    task = RangeTask(INPUT, "uservisits/big.csv", record["s3"]["object"]["eTag"], None, None, None,
                     record["s3"]["object"]["size"], 0, 1, 0, record["s3"]["object"]["size"])
    with Client(app.app) as client:
        outcomes = client.lambda_.invoke("map_range", task.to_dict()).payload
    assert {o["outcome"] for o in outcomes} >= {"mapped"}
    assert json.loads(json.dumps(task.to_dict())) == task.to_dict() == RangeTask.from_dict(task.to_dict()).to_dict()


def test_the_lambda_dispatcher_invokes_map_range_asynchronously_once_per_range():
    import boto3

    from chalicelib.errors import DispatchFailed
    from chalicelib.invoke import LambdaRangeInvoker

    client = boto3.client("lambda", region_name="us-east-1")
    tasks = [RangeTask(INPUT, "k.csv", "e", None, "0A", None, 300, i, 3, 100 * i, 100 * (i + 1)) for i in range(3)]
    with Stubber(client) as stub:
        for task in tasks:
            stub.add_response("invoke", {"StatusCode": 202}, {
                "FunctionName": "tally-dev-map_range", "InvocationType": "Event",
                "Payload": json.dumps(task.to_dict()).encode()})
        LambdaRangeInvoker("tally-dev-map_range", client)(tasks)
        stub.assert_no_pending_responses()

        stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        with pytest.raises(DispatchFailed):
            LambdaRangeInvoker("tally-dev-map_range", client)(tasks[:1])


def test_settings_split_size_and_the_range_function_of_the_running_stage():
    on_lambda = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "tally-prod-map_object", "TALLY_SPLIT_MB": "0.5"})
    assert on_lambda.range_function == "tally-prod-map_range" and on_lambda.split_bytes == 512 * 1024
    assert Settings.from_env({}).split_bytes == 256 << 20 and Settings.from_env({}).range_function is None
    assert Settings.from_env({"TALLY_SPLIT_MB": "0"}).split_bytes is None  # 0: never split
    named = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "x-map_object", "TALLY_RANGE_FUNCTION": "ranges"})
    assert named.range_function == "ranges"




def test_a_range_that_cannot_be_read_quarantines_the_version_and_its_siblings_are_dropped(s3):
    job = load_jobs("reducers").get(JOB)  # under on_bad_row="fail": under "skip" the bad row is only skipped
    fanned = Fanned(s3, jobs=JobCatalog([job.model_copy(update={"format": job.format.model_copy(
        update={"on_bad_row": "fail"})})]))
    body = visits(40) + uservisits_rows(("5.5.5.5", "not-a-number")) + visits(40, seed=5)
    tasks = fanned.put("uservisits/bad.csv", body)
    by_range = [set(fanned.deliver([task])) for task in tasks]  # each range: its outcome for every job
    assert by_range.count({"quarantined"}) == 1 and by_range.count({"mapped"}) == len(tasks) - 1
    fanned.reduce()

    status = fanned.status()
    assert fanned.served() == {} and fanned.inbox() == []
    assert [q["key"] for q in status["quarantined"]] == ["uservisits/bad.csv"] and status["idle"] is True
    [record] = status["quarantined"]
    bad_range = tasks[by_range.index({"quarantined"})]
    assert record["range"] == [bad_range.index, bad_range.count] and record["line"] is None
    assert bad_range.start <= record["offset"] <= bad_range.end + len(body.splitlines()[0]) + 1
    collect_garbage(fanned.runtime, JOB)
    assert list(fanned.runtime.state_store.list(layout.parts_prefix(JOB))) == []


def test_a_range_of_only_malformed_rows_is_counted_not_quarantined_the_object_has_good_ones(fanned, s3):
    garbage = "".join(f"only,{i},three\n" for i in range(100))  # several ranges with no parseable row
    tasks = fanned.put("uservisits/patchy.csv", visits(30) + garbage + visits(30, seed=6))
    assert "quarantined" not in fanned.deliver(tasks)
    fanned.reduce()
    assert fanned.served() == {k: v for k, v in query_over_bucket_rows(s3).items()}
    assert fanned.status()["bad_rows_skipped"] == 100


def query_over_bucket_rows(s3) -> dict[str, Decimal]:
    """The query over the bucket's well-formed rows (nine columns)."""
    totals: dict[str, Decimal] = {}
    for item in s3.list_objects_v2(Bucket=INPUT)["Contents"]:
        for line in s3.get_object(Bucket=INPUT, Key=item["Key"])["Body"].read().decode().splitlines():
            row = line.split(",")
            if len(row) == 9:
                totals[row[0][:8]] = totals.get(row[0][:8], Decimal(0)) + Decimal(row[3])
    return totals


def test_a_scan_jobs_large_object_serves_each_ranges_output_rows_once(fanned, s3):
    rows = rankings_rows(*[(f"http://example.com/page/{i}", (i * 37) % 300) for i in range(200)])
    tasks = fanned.put("rankings/big.csv", rows)
    fanned.deliver(tasks[::-1] + tasks[:2])
    fanned.reduce(SCAN_JOB)

    assert served_scan(fanned.runtime) == scan_over_bucket(s3) and len(scan_over_bucket(s3)) > 50
    assert fanned.status(SCAN_JOB)["idle"] is True
