"""Reconcile and backfill: whatever events were lost, the result catches up with the bucket."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from chalicelib.engine import layout
from chalicelib.engine.reconcile import Reconciler
from chalicelib.local.cli import main as tally
from chalicelib.runtime import utc_now

from .conftest import INPUT, uservisits_rows

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
