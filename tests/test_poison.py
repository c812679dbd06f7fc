"""Poison objects: given these files and these deliveries, the object is quarantined for the job it poisons,
with its reason and attempts, and every other job and record maps as if nothing had happened."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from chalicelib.aggregation import Serializer, register_aggregate
from chalicelib.engine import layout
from chalicelib.engine.attempts import counts
from chalicelib.errors import MappingFailed, TallyError
from chalicelib.jobs import Job
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings
from reducers.tables import TABLES

from .conftest import uservisits_rows
from .faults import FaultyStore, Killed
from .test_reducer import CountingStore
from .test_sharded_reduce import install

USERVISITS = TABLES["uservisits"].format

POISON = 13  # uservisits_rows gives row i the duration i % 50 + 1: a file of 13 rows or more holds one


def durations(state: set, values: pa.Array) -> set:
    if POISON in values.to_pylist():
        raise ValueError(f"duration {POISON} is poison")
    return state | set(values.to_pylist())


register_aggregate("poisoned_set", init=set, accumulate=durations, merge=lambda a, b: a | b,
                   serializer=Serializer(dumps=lambda s: json.dumps(sorted(s)).encode(),
                                         loads=lambda b: set(json.loads(b))),
                   finalize=sorted, result_type=pa.list_(pa.int64()))


def overflowing(table: pa.Table) -> pa.Table:
    """Checked arithmetic that overflows on the poison row only."""
    factor = pc.if_else(pc.equal(table["duration"], POISON), 1 << 62, 1)
    return pa.table({"ip": table["sourceIP"], "weight": pc.multiply_checked(factor, 4)})


HEALTHY = Job(name="healthy", prefix="uservisits/", format=USERVISITS, keys={"ip": "sourceIP"},
              aggregates={"revenue": "sum(adRevenue)", "visits": "count()"})
UDAF = Job(name="poison-udaf", prefix="uservisits/", format=USERVISITS, keys={"ip": "sourceIP"},
           aggregates={"durations": "poisoned_set(duration)"})
MAP = Job(name="poison-map", prefix="uservisits/", format=USERVISITS, map=overflowing,
          map_columns={"ip": "string", "weight": "int64"}, map_reads=["sourceIP", "duration"],
          keys={"ip": "ip"}, aggregates={"weight": "sum(weight)"})


def visits(count: int, first: int = 0) -> str:
    return uservisits_rows(*[(f"10.0.0.{i}", "1.5") for i in range(first, first + count)])


def status(runtime, job: str) -> dict:
    return runtime.status.status(runtime.jobs.get(job))


def inbox(runtime, job: str) -> list[str]:
    return [o.key for o in runtime.state_store.list(layout.inbox_prefix(job))]


def attempt_records(runtime) -> list[str]:
    return [o.key for o in runtime.state_store.list(layout.attempts_prefix())]


def served(runtime, job: str) -> dict:
    runtime.reducer.reduce_job(runtime.jobs.get(job))
    _, table = runtime.results.current(runtime.jobs.get(job))
    return {row["ip"]: row for row in table.to_pylist()}


def test_user_code_that_raises_on_a_row_fails_twice_then_is_quarantined_while_other_jobs_serve_the_object(
        runtime, uploads):
    install(runtime, HEALTHY, UDAF, MAP)
    record = uploads.put("uservisits/poisoned.csv", visits(20))

    for _ in range(2):  # Lambda's first delivery and its first retry
        with pytest.raises(MappingFailed) as failed:
            runtime.mapper.handle(uploads.event(record))
        assert sorted(failed.value.failures) == [
            "uservisits/poisoned.csv (poison-map): ArrowInvalid: overflow",
            "uservisits/poisoned.csv (poison-udaf): ValueError: duration 13 is poison"]
    outcomes = runtime.mapper.handle(uploads.event(record))  # the last retry

    assert {(o.job, o.outcome) for o in outcomes} == {
        ("healthy", "skipped"), ("poison-udaf", "quarantined"), ("poison-map", "quarantined")}
    assert len(inbox(runtime, "healthy")) == 1  # mapped by the first attempt, skipped by the retries
    assert len(served(runtime, "healthy")) == 20
    for job, reason in {"poison-udaf": "ValueError: duration 13 is poison",
                        "poison-map": "ArrowInvalid: overflow"}.items():
        report = status(runtime, job)
        [entry] = report["quarantined"]
        assert (entry["key"], entry["reason"], entry["attempts"]) == ("uservisits/poisoned.csv", reason, 3)
        assert report["idle"] is True and inbox(runtime, job) == []


def test_a_quarantined_poison_object_delivered_again_is_not_mapped_again(runtime, uploads):
    install(runtime, HEALTHY, UDAF)
    record = uploads.put("uservisits/poisoned.csv", visits(20))
    for _ in range(2):
        with pytest.raises(MappingFailed):
            runtime.mapper.handle(uploads.event(record))
    runtime.mapper.handle(uploads.event(record))
    opened = []
    runtime.input_store.open = lambda key, **kwargs: opened.append(key)

    outcomes = runtime.mapper.handle(uploads.event(record))  # S3 delivers the event once more, late

    assert {(o.job, o.outcome) for o in outcomes} == {("healthy", "skipped"), ("poison-udaf", "skipped")}
    assert opened == []


def test_handle_maps_every_record_of_an_event_then_raises_listing_the_failures(runtime, uploads):
    install(runtime, HEALTHY, UDAF)
    poisoned = uploads.put("uservisits/a-poisoned.csv", visits(20))
    good = uploads.put("uservisits/b-good.csv", visits(5, first=100))

    with pytest.raises(MappingFailed) as failed:
        runtime.mapper.handle(uploads.event(poisoned, good))

    assert failed.value.failures == ["uservisits/a-poisoned.csv (poison-udaf): ValueError: duration 13 is poison"]
    assert {(o.key, o.job, o.outcome) for o in failed.value.outcomes} == {
        ("uservisits/a-poisoned.csv", "healthy", "mapped"), ("uservisits/a-poisoned.csv", "poison-udaf", "failed"),
        ("uservisits/b-good.csv", "healthy", "mapped"), ("uservisits/b-good.csv", "poison-udaf", "mapped")}
    assert len(served(runtime, "healthy")) == 25 and len(served(runtime, "poison-udaf")) == 5


def test_a_record_that_fails_outright_does_not_stop_the_next_one(runtime, uploads):
    install(runtime, HEALTHY)
    first = uploads.put("uservisits/a.csv", visits(3))
    second = uploads.put("uservisits/b.csv", visits(2, first=100))
    map_object = runtime.mapper.map_object

    def state_unreachable_for_a(event):
        if event.key == "uservisits/a.csv":
            raise RuntimeError("state bucket unreachable")
        return map_object(event)

    runtime.mapper.map_object = state_unreachable_for_a
    with pytest.raises(MappingFailed) as failed:
        runtime.mapper.handle(uploads.event(first, second))

    assert failed.value.failures == ["uservisits/a.csv: RuntimeError: state bucket unreachable"]
    assert sorted(served(runtime, "healthy")) == ["10.0.0.100", "10.0.0.101"]


def gzip_of_newlines(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    return b"".join(compressor.compress(b"\n" * (1 << 20)) for _ in range(megabytes)) + compressor.flush()


def test_a_decompression_bomb_is_quarantined_at_once_with_what_it_decompressed_to(runtime, uploads):
    install(runtime, HEALTHY)
    runtime.mapper.max_decompressed = 4 << 20
    bomb = gzip_of_newlines(200)
    assert len(bomb) < 1 << 20

    [outcome] = runtime.mapper.handle(uploads.event(uploads.put("uservisits/bomb.csv.gz", bomb)))

    assert outcome.outcome == "quarantined"
    [entry] = status(runtime, "healthy")["quarantined"]
    assert "over the budget of 4,194,304 bytes of text" in entry["reason"]
    assert "TALLY_MAP_MAX_DECOMPRESSED_MB" in entry["reason"] and entry["attempts"] == 1
    assert attempt_records(runtime) == []


def test_mapping_past_the_time_budget_is_quarantined_at_once(runtime, uploads):
    install(runtime, HEALTHY, UDAF)
    runtime.mapper.block_size, runtime.mapper.max_seconds = 512, 300
    start, calls = utc_now(), []

    def a_minute_per_call() -> dt.datetime:  # the mapper reads its clock once per batch
        calls.append(None)
        return start + dt.timedelta(minutes=len(calls))

    runtime.mapper.clock = a_minute_per_call
    outcomes = runtime.mapper.handle(uploads.event(uploads.put("uservisits/slow.csv", visits(12) * 20)))

    assert {(o.job, o.outcome) for o in outcomes} == {("healthy", "quarantined"), ("poison-udaf", "quarantined")}
    [entry] = status(runtime, "healthy")["quarantined"]
    assert entry["reason"] == ("mapping took 360 s and is not done, over the budget of 300 s "
                               "(raise TALLY_MAP_MAX_SECONDS to map it)")
    assert inbox(runtime, "healthy") == [] and list(runtime.state_store.list(layout.parts_prefix("healthy"))) == []


def test_an_attempt_killed_three_times_is_quarantined_by_the_next_hand_over(runtime, uploads):
    install(runtime, HEALTHY)
    record = uploads.put("uservisits/killer.csv", visits(5))
    state = runtime.mapper.state
    for _ in range(3):  # killed mid-way (a timeout, out of memory) on every delivery Lambda makes
        runtime.mapper.state = FaultyStore(state, "put", after=False, key_contains="/inbox/")
        with pytest.raises(Killed):
            runtime.mapper.handle(uploads.event(record))
    runtime.mapper.state = state
    assert len(attempt_records(runtime)) == 3

    # The reconcile hands the version over again, once those attempts are older than the time budget.
    later = utc_now() + dt.timedelta(seconds=runtime.mapper.max_seconds + 1)
    runtime.mapper.clock = lambda: later
    report = runtime.reconciler.reconcile(runtime.jobs.get("healthy"), grace=dt.timedelta(0))

    assert [(o.outcome, o.reason) for o in report.mapped] == [
        ("quarantined", "3 attempts did not finish (timeout or out of memory)")]
    [entry] = status(runtime, "healthy")["quarantined"]
    assert (entry["key"], entry["attempts"]) == ("uservisits/killer.csv", 3)
    assert status(runtime, "healthy")["idle"] is True
    assert runtime.reconciler.plan(runtime.jobs.get("healthy"), grace=dt.timedelta(0)).to_map == ()


def test_an_attempt_killed_recently_may_still_be_running_and_is_not_counted(runtime, uploads):
    install(runtime, HEALTHY)
    record = uploads.put("uservisits/a.csv", visits(5))
    state = runtime.mapper.state
    for _ in range(3):
        runtime.mapper.state = FaultyStore(state, "put", after=False, key_contains="/inbox/")
        with pytest.raises(Killed):
            runtime.mapper.handle(uploads.event(record))
    runtime.mapper.state = state

    [outcome] = runtime.mapper.handle(uploads.event(record))  # a duplicate delivery, while they may still run

    assert outcome.outcome == "mapped" and len(served(runtime, "healthy")) == 5
    assert len(attempt_records(runtime)) == 3  # theirs: not this attempt's to delete while they may run


def test_a_job_that_failed_then_succeeded_leaves_no_attempt_records(runtime, uploads, monkeypatch):
    install(runtime, HEALTHY, UDAF)
    record = uploads.put("uservisits/a.csv", visits(20))
    with pytest.raises(MappingFailed):
        runtime.mapper.handle(uploads.event(record))
    monkeypatch.setattr(f"{__name__}.POISON", -1)  # whatever failed (a dependency, memory) no longer does

    outcomes = runtime.mapper.handle(uploads.event(record))

    assert {(o.job, o.outcome) for o in outcomes} == {("healthy", "skipped"), ("poison-udaf", "mapped")}
    assert attempt_records(runtime) == []


def test_the_common_path_costs_one_list_one_put_and_one_delete_per_job_group(runtime, uploads):
    install(runtime, HEALTHY, UDAF, MAP)
    counting = CountingStore(runtime.mapper.state)
    runtime.mapper.state = counting
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/a.csv", visits(5))))

    # Three jobs, one parse: three markers, and for the attempt one LIST, one PUT and one DELETE.
    assert counting.calls == {"list": 1, "put": 3 + 1, "delete": 1}
    assert attempt_records(runtime) == []


def test_a_failure_of_storage_is_retried_but_not_counted_against_the_object(runtime, uploads):
    install(runtime, HEALTHY)
    runtime.mapper.max_attempts = 1
    record = uploads.put("uservisits/a.csv", visits(5))
    state = runtime.mapper.state

    class Unreachable(ConnectionError):
        pass

    class Flaky(CountingStore):
        def put(self, key, *args, **kwargs):
            if "/inbox/" in key:
                raise Unreachable("S3 did not answer")
            return state.put(key, *args, **kwargs)

    runtime.mapper.state = Flaky(state)
    with pytest.raises(MappingFailed, match="S3 did not answer"):
        runtime.mapper.handle(uploads.event(record))
    runtime.mapper.state = state

    [outcome] = runtime.mapper.handle(uploads.event(record))
    assert outcome.outcome == "mapped" and status(runtime, "healthy")["quarantined"] == []


def test_attempt_records_of_a_replaced_version_are_swept_by_the_reconcile_once_old(runtime, uploads, s3_clock):
    install(runtime, HEALTHY, UDAF)
    s3_clock.offset = -dt.timedelta(hours=2)  # what is written now looks two hours old
    for key in ("uservisits/replaced.csv", "uservisits/current.csv"):
        with pytest.raises(MappingFailed):
            runtime.mapper.handle(uploads.event(uploads.put(key, visits(20))))
    s3_clock.offset = dt.timedelta(0)
    uploads.put("uservisits/replaced.csv", visits(3))  # its event still on its way

    runtime.reconciler.reconcile_all()

    # The current version's records are still counting (and the reconcile made one more attempt at it).
    assert {json.loads(runtime.state_store.get(key)[0])["key"] for key in attempt_records(runtime)} == {
        "uservisits/current.csv"}


def test_a_poisoned_range_of_a_large_object_quarantines_the_version_for_its_job_only(runtime, uploads):
    install(runtime, HEALTHY, UDAF)
    runtime.mapper.split_bytes = 1000  # ranges mapped one after the other in this process, each counted apart
    record = uploads.put("uservisits/large.csv", visits(20))

    for _ in range(2):
        with pytest.raises(MappingFailed, match="duration 13 is poison"):
            runtime.mapper.handle(uploads.event(record))
    runtime.mapper.handle(uploads.event(record))

    assert len(served(runtime, "healthy")) == 20
    assert served(runtime, "poison-udaf") == {}  # the range that did map is dropped with its version
    report = status(runtime, "poison-udaf")
    [entry] = report["quarantined"]
    assert (entry["reason"], entry["attempts"], entry["range"][1]) == ("ValueError: duration 13 is poison", 3, 2)
    assert report["idle"] is True


def test_the_budgets_and_attempts_are_validated_settings_the_runtime_hands_the_mapper(s3):
    settings = Settings.from_env({"TALLY_MAP_MAX_ATTEMPTS": "5", "TALLY_MAP_MAX_SECONDS": "600",
                                  "TALLY_MAP_MAX_DECOMPRESSED_MB": "0.5"})
    mapper = Runtime(settings, s3_client=s3).mapper
    assert (mapper.max_attempts, mapper.max_seconds, mapper.max_decompressed) == (5, 600, 512 * 1024)
    defaults = Settings.from_env({})
    assert (defaults.map_max_attempts, defaults.map_max_seconds) == (3, 720)
    for bad in ({"TALLY_MAP_MAX_ATTEMPTS": "0"}, {"TALLY_MAP_MAX_SECONDS": "900"},
                {"TALLY_MAP_MAX_DECOMPRESSED_MB": "0"}):
        with pytest.raises(TallyError, match="invalid TALLY_"):
            Settings.from_env(bad)


def test_storage_and_network_failures_are_not_counted_against_the_object(s3):
    from botocore.exceptions import ClientError, EndpointConnectionError

    throttled = ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "GetObject")
    missing = s3.exceptions.NoSuchBucket({"Error": {"Code": "NoSuchBucket"}}, "PutObject")  # a generated class
    for error in (throttled, missing, EndpointConnectionError(endpoint_url="https://s3"), TimeoutError()):
        assert counts(error) is False
    for error in (ValueError("poison"), pa.ArrowInvalid("overflow"), MemoryError(), KeyError("x")):
        assert counts(error) is True


class ResetMidway:
    """An object's body whose connection is reset after `good` bytes, as a socket read that times out or is
    reset raises an OSError."""

    def __init__(self, body, good: int):
        self.body, self.good, self.given = body, good, 0

    def read(self, size: int = -1) -> bytes:
        if self.given >= self.good:
            raise ConnectionResetError(104, "Connection reset by peer")
        data = self.body.read(min(size if size and size > 0 else self.good, self.good - self.given))
        self.given += len(data)
        return data

    def close(self) -> None:
        self.body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("key", ["uservisits/reset.csv", "uservisits/reset.csv.gz"])
def test_a_connection_reset_mid_read_is_retried_never_quarantined_nor_counted(runtime, uploads, key):
    """A read that fails on the network says nothing about the object: before, Arrow passed the OSError on as a
    parse error and the good object was quarantined at once."""
    install(runtime, HEALTHY)
    record = uploads.put(key, visits(2000), compress=key.endswith(".gz"))
    opened = runtime.input_store.open

    def resetting(key, **kwargs):
        found = opened(key, **kwargs)
        return dataclasses.replace(found, body=ResetMidway(found.body, 5000))

    runtime.input_store.open = resetting
    for _ in range(4):  # more than TALLY_MAP_MAX_ATTEMPTS: none of these counts
        with pytest.raises(MappingFailed) as failed:
            runtime.mapper.handle(uploads.event(record))
        assert "ReadFailed" in failed.value.failures[0] and "Connection reset" in failed.value.failures[0]
    assert status(runtime, "healthy")["quarantined"] == []
    runtime.input_store.open = opened
    runtime.mapper.handle(uploads.event(record))  # the network is back
    assert len(served(runtime, "healthy")) == 2000 and status(runtime, "healthy")["idle"] is True
