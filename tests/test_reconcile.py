"""Reconcile and backfill: whatever events were lost, the result catches up with the bucket."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.counts import InputCounts, read_counted
from chalicelib.engine.events import ObjectEvent, notification
from chalicelib.engine.reconcile import Reconciler
from chalicelib.errors import DispatchFailed
from chalicelib.local.cli import main as tally
from chalicelib.runtime import Runtime, utc_now
from chalicelib.settings import Settings

from .conftest import INPUT, STATE, requests_sent, scheduled_event, uservisits_rows

JOB = "bdb-agg-2a"


def served(runtime) -> dict[str, Decimal]:
    _, table = runtime.results.current(runtime.jobs.get(JOB))
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


def settle(runtime) -> None:
    runtime.reconciler.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))


def status(runtime) -> dict:
    return runtime.status.status(runtime.jobs.get(JOB))


def test_objects_whose_events_never_came_are_mapped_by_the_reconcile(runtime, uploads):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1"), ("2.2.2.2", "2")))  # no event delivered
    uploads.put("uservisits/b.csv.gz", uservisits_rows(("1.1.1.1", "3")), compress=True)
    assert status(runtime)["idle"] is False and status(runtime)["objects"]["waiting"] == 2

    settle(runtime)

    assert served(runtime) == {"1.1.1.1": Decimal(4), "2.2.2.2": Decimal(2)}
    assert status(runtime)["idle"] is True


def test_a_lost_removal_and_a_lost_overwrite_are_repaired(runtime, uploads, s3):
    for key, rows in {"uservisits/a.csv": [("1.1.1.1", "1")], "uservisits/b.csv": [("2.2.2.2", "2")]}.items():
        runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    s3.delete_object(Bucket=INPUT, Key="uservisits/a.csv")                       # its event is lost
    uploads.put("uservisits/b.csv", uservisits_rows(("3.3.3.3", "7")))           # and this one's too
    assert status(runtime)["objects"]["to_retract"] == 2

    settle(runtime)

    assert served(runtime) == {"3.3.3.3": Decimal(7)}
    assert status(runtime)["idle"] is True


def test_a_settled_job_reconciles_to_nothing(runtime, uploads):
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    report = runtime.reconciler.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))

    assert (report.mapped, report.removed, report.orphans_deleted) == ([], 0, 0)


def test_quarantined_objects_are_not_mapped_again_on_every_reconcile(runtime, uploads):
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/bad.csv", "garbage\n")))
    report = runtime.reconciler.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    assert report.mapped == []


def test_orphaned_parts_and_packs_are_collected_only_once_nothing_can_still_be_writing_them(runtime, uploads):
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    [live_pack] = [o.key for o in runtime.state_store.list(layout.packs_prefix(JOB))]
    runtime.state_store.put(layout.part_key(JOB, "orphan", "g1b1", 0), b"left by a crashed mapper")
    runtime.state_store.put(layout.generation_keys(JOB, 9).pack, b"left by a reducer that lost its race")
    now = Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                     utc_now)
    later = Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                       lambda: utc_now() + dt.timedelta(hours=2))

    assert now.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0)).orphans_deleted == 0
    assert later.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0)).orphans_deleted == 2
    assert list(runtime.state_store.list(layout.parts_prefix(JOB))) == []
    assert [o.key for o in runtime.state_store.list(layout.packs_prefix(JOB))] == [live_pack]
    assert served(runtime) == {"1.1.1.1": Decimal("1")}


def test_tally_backfill_maps_a_prefix_through_the_s3_endpoint(s3_server, runtime, uploads, capsys):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1.5")))

    code = tally(["backfill", JOB, "--s3-endpoint", s3_server.meta.endpoint_url])
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    assert code == 0 and "1 objects mapped" in capsys.readouterr().out
    assert served(runtime) == {"1.1.1.1": Decimal("1.5")}
    assert tally(["backfill", "no-such-job", "--s3-endpoint", s3_server.meta.endpoint_url]) == 1  # failed


def test_objects_younger_than_the_grace_period_are_left_to_their_own_events(runtime, uploads):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))
    assert runtime.reconciler.reconcile(runtime.jobs.get(JOB)).mapped == []
    assert len(runtime.reconciler.reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0)).mapped) == 1


def dispatching(runtime, dispatch) -> Reconciler:
    return Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                      utc_now, dispatch=dispatch)


def test_the_reconcile_hands_what_it_finds_to_the_mapper_and_maps_nothing_itself(runtime, uploads, lambdas):
    # A key S3 URL-encodes (space and plus): the handed-over record must read back as the same key.
    uploads.put("uservisits/a b+c.csv", uservisits_rows(("1.1.1.1", "1"), ("2.2.2.2", "2")))
    uploads.put("uservisits/d.csv.gz", uservisits_rows(("1.1.1.1", "3")), compress=True)
    dispatched: list[ObjectEvent] = []

    report = dispatching(runtime, dispatched.append).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))

    assert (report.mapped, report.dispatched, report.left) == ([], 2, 0)
    assert sorted(e.key for e in dispatched) == ["uservisits/a b+c.csv", "uservisits/d.csv.gz"]
    assert all(e.bucket == INPUT and e.created and e.etag and e.size for e in dispatched)
    assert list(runtime.state_store.list(layout.inbox_prefix(JOB))) == []  # nothing mapped here

    # Delivered to map_object as the S3 notification the AWS and local dispatchers send, then reduced.
    for event in dispatched:
        outcomes = lambdas.lambda_.invoke("map_object", notification([event])).payload
        assert {(o["job"], o["key"], o["outcome"]) for o in outcomes} >= {(JOB, event.key, "mapped")}
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    assert served(runtime) == {"1.1.1.1": Decimal(4), "2.2.2.2": Decimal(2)}
    assert status(runtime)["idle"] is True


def test_the_reconcile_counts_what_it_found_and_what_the_inbox_cannot_follow(runtime, uploads, s3):
    for key in ("uservisits/a.csv", "uservisits/b.csv", "uservisits/c.csv"):
        runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(("1.1.1.1", "1")))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    s3.delete_object(Bucket=INPUT, Key="uservisits/a.csv")                           # its event is lost
    uploads.put("uservisits/b.csv", uservisits_rows(("3.3.3.3", "7")))               # and this one's too
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/d.csv", uservisits_rows(("4.4.4.4", "4")))))
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/bad.csv", "garbage\n")))
    landed = {o.key: o.last_modified for o in runtime.input_store.list("uservisits/")}

    dispatching(runtime, lambda event: None).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    counted = read_counted(runtime.state_store, JOB)

    # b's new version was handed over and no marker follows it yet: it, and b's live version it replaces, are
    # stale; d's marker and a's removal (noted by the reconcile) are in the inbox.
    assert counted.counts == InputCounts(
        landed=4, merged=1, quarantined=1, waiting=2, to_retract=2, stale_waiting=1, stale_retract=1,
        oldest_waiting=min(landed["uservisits/b.csv"], landed["uservisits/d.csv"]),
        oldest_stale=landed["uservisits/b.csv"])
    assert [(r["key"], r["attempts"]) for r in counted.records()] == [("uservisits/bad.csv", 1)]
    with requests_sent(runtime.client) as sent:  # a record it holds already is not read again
        dispatching(runtime, lambda event: None).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    assert not [name for _, name in sent if "/quarantine/" in name and not name.endswith("/quarantine/")]
    assert read_counted(runtime.state_store, JOB).records() == counted.records()


def test_counts_from_an_overlapping_run_that_listed_earlier_do_not_replace_newer_ones(runtime, uploads):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))
    later = Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                       lambda: utc_now() + dt.timedelta(minutes=1), dispatch=lambda event: None)
    later.reconcile(runtime.jobs.get(JOB))
    newer = read_counted(runtime.state_store, JOB)

    dispatching(runtime, lambda event: None).reconcile(runtime.jobs.get(JOB))

    assert read_counted(runtime.state_store, JOB) == newer and newer.counts.landed == 1


def test_reconcile_all_reconciles_every_job_and_fails_at_the_end_naming_the_ones_that_failed(runtime, uploads,
                                                                                             monkeypatch):
    uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "1")))
    uploads.put("requests/r.jsonl", "{}\n")
    mapped: list[str] = []

    def map_object(event: ObjectEvent) -> list:
        if event.key.startswith("uservisits/"):
            raise OSError(f"state bucket unreachable for {event.key}")
        mapped.append(event.key)
        return []

    monkeypatch.setattr(runtime.mapper, "map_object", map_object)
    # Past the grace period, which reconcile_all does not shorten.
    reconciler = Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper,
                            runtime.reducer, lambda: utc_now() + dt.timedelta(minutes=5))
    uservisits_jobs = {job.name for job in runtime.jobs if job.prefix == "uservisits/"}
    with pytest.raises(RuntimeError) as failed:
        reconciler.reconcile_all()

    assert mapped == ["requests/r.jsonl"]  # page-latency was reconciled whatever its place among the jobs
    assert len(uservisits_jobs) > 1 and {name for name in uservisits_jobs if f"{name}: OSError" in
                                         str(failed.value)} == uservisits_jobs


def test_on_lambda_the_reconcile_invokes_map_object_once_per_object_asynchronously(s3):
    from botocore.stub import Stubber

    from chalicelib.invoke import LambdaObjectInvoker

    on_lambda = Runtime(Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "tally-prod-reconcile_inputs",
                                           "TALLY_INPUT_BUCKET": INPUT, "TALLY_STATE_BUCKET": STATE}), s3_client=s3)
    invoker = on_lambda.reconciler.dispatch
    assert isinstance(invoker, LambdaObjectInvoker) and invoker.function_name == "tally-prod-map_object"
    assert Runtime(Settings(), s3_client=s3).reconciler.dispatch is None  # tests and `tally backfill`: here

    event = ObjectEvent(INPUT, "uservisits/a b.csv", "e1", 10, name="ObjectCreated:Reconcile")
    with Stubber(invoker.client) as stub:
        stub.add_response("invoke", {"StatusCode": 202}, {
            "FunctionName": "tally-prod-map_object", "InvocationType": "Event",
            "Payload": json.dumps(notification([event])).encode()})
        invoker(event)
        stub.assert_no_pending_responses()
        stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        with pytest.raises(DispatchFailed, match="uservisits/a b.csv"):
            invoker(event)


def test_a_job_added_later_is_backfilled_without_mapping_the_object_again_for_the_others(s3, uploads):
    """The reconcile names the job it found the object missing from: the jobs that have it are not mapped again
    (before, every job over the prefix mapped it once more per job that missed it)."""
    from chalicelib.jobs import JobCatalog, load_jobs
    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings

    from .conftest import STATE

    code = load_jobs("reducers")
    settings = Settings(input_bucket=INPUT, state_bucket=STATE, api_auth="none")
    before = Runtime(settings, s3_client=s3, catalog=JobCatalog([code.get(JOB)]))
    before.mapper.handle(uploads.event(uploads.put("uservisits/a.csv", uservisits_rows(("1.1.1.1", "2")))))
    before.reducer.reduce_job(before.jobs.get(JOB))
    after = Runtime(settings, s3_client=s3, catalog=JobCatalog([code.get(JOB), code.get("bdb-agg-2b")]))

    report = after.reconciler.reconcile(after.jobs.get("bdb-agg-2b"), grace=dt.timedelta(0))

    assert [(o.job, o.outcome) for o in report.mapped] == [("bdb-agg-2b", "mapped")]
    assert list(after.state_store.list(layout.inbox_prefix(JOB))) == []  # 2a has it: not mapped again
    after.reducer.reduce_job(after.jobs.get("bdb-agg-2b"))
    _, table = after.results.current(after.jobs.get("bdb-agg-2b"))
    assert table.column("adRevenue").to_pylist() == [Decimal(2)]


def test_the_jobs_an_event_names_survive_the_notification_and_the_range_tasks():
    from chalicelib.engine.events import ObjectEvent, notification, parse_records
    from chalicelib.engine.fanout import RangeTask, range_tasks

    event = ObjectEvent(INPUT, "uservisits/a b.csv", "e1", 1000, name="ObjectCreated:Reconcile", jobs=("j1",))
    assert parse_records(notification([event])) == [event]
    tasks = range_tasks(event, "e1", 300)
    assert {task.jobs for task in tasks} == {("j1",)}
    assert [RangeTask.from_dict(task.to_dict()) for task in tasks] == tasks
    legacy = {k: v for k, v in tasks[0].to_dict().items() if k != "jobs"}  # dispatched by the previous code
    assert RangeTask.from_dict(legacy).jobs == ()
