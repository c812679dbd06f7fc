"""A status in a few requests (engine/status.py): past the size a listing page covers, counts come from the
reconcile's counts and the manifest's totals, are followed through the inbox, and cost the same requests at any
size; below it, they are exact as of the request."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest

from chalicelib.engine import layout
from chalicelib.engine.counts import MAX_LISTED_QUARANTINE, read_counted
from chalicelib.engine.reconcile import Reconciler
from chalicelib.engine.reducer import Manifest, Reducer
from chalicelib.engine.status import StatusReader
from chalicelib.runtime import utc_now

from .conftest import requests_sent, uservisits_rows

JOB = "bdb-agg-2a"


def nowhere(runtime, clock=utc_now) -> Reconciler:
    """A reconcile whose hand-overs go nowhere: as on AWS, it maps nothing itself."""
    return Reconciler(runtime.jobs, runtime.input_store, runtime.state_store, runtime.mapper, runtime.reducer,
                      clock, dispatch=lambda event: None)


def past_exact(runtime, clock=utc_now) -> StatusReader:
    """The status as it reads any job above one listed version: from the counts."""
    return StatusReader(runtime.reducer, runtime.input_store, runtime.state_store, clock, exact_up_to=1)


def merge(runtime, uploads, *names: str) -> None:
    for name in names:
        runtime.mapper.handle(uploads.event(uploads.put(f"uservisits/{name}", uservisits_rows(("1.1.1.1", "1")))))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))


@pytest.mark.parametrize("landed, quarantined, markers", [(1_200, 2, 10), (2_400, 120, 1_100)])
def test_a_large_jobs_status_costs_three_requests_whatever_its_size(runtime, uploads, landed, quarantined,
                                                                    markers):
    """Putting 100,000 objects into moto takes minutes, and listing them a minute more (0.6 s a page), so this
    shows the number of requests does not grow with the job instead: doubling the input, with 60 times the
    quarantined versions and an inbox past one page, sends the very same requests, and none of them lists the
    input. 100,000 objects cost these three requests too."""
    merge(runtime, uploads, "merged-1.csv", "merged-2.csv", "merged-3.csv")
    bad = [uploads.put(f"uservisits/bad-{i:03d}.csv", "garbage\n") for i in range(quarantined)]
    runtime.mapper.handle(uploads.event(*bad))
    waiting = [uploads.put(f"uservisits/{i:05d}.csv", "x\n") for i in range(landed - 3 - quarantined)]
    for record in waiting[:markers]:  # mapped, not yet reduced: only their markers' keys matter here
        contribution = layout.contribution_id(record["s3"]["object"]["key"], record["s3"]["object"]["eTag"])
        runtime.state_store.put(layout.inbox_key(JOB, layout.version_marker(contribution, "a1")), b"{}")
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))

    with requests_sent(runtime.client) as sent:
        status = runtime.status.status(runtime.jobs.get(JOB))

    assert Counter(sent) == {("GetObject", layout.counts_key(JOB)): 1, ("GetObject", layout.manifest_key(JOB)): 1,
                             ("ListObjectsV2", layout.inbox_prefix(JOB)): 1}
    assert status["objects"] == {"landed": landed, "merged": 3, "quarantined": quarantined,
                                 "waiting": landed - 3 - quarantined, "to_retract": 0,
                                 "mapped": 3 + min(markers, 1000), "seen": 3 + min(markers, 1000) + quarantined}
    assert (status["partials_pending"], status["partials_pending_more"]) == (min(markers, 1000), markers > 1000)
    assert len(status["quarantined"]) == min(quarantined, MAX_LISTED_QUARANTINE)
    assert status["quarantined"][0]["key"] == "uservisits/bad-000.csv" and status["quarantined"][0]["reason"]
    assert status["rows_read"] == 3 and status["idle"] is False and status["counts_as_of"] is not None


def test_while_small_a_status_lists_the_input_and_counts_what_landed_since_the_reconcile(runtime, uploads):
    merge(runtime, uploads, "a.csv")
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    uploads.put("uservisits/b.csv", uservisits_rows(("2.2.2.2", "2")))  # no event yet

    with requests_sent(runtime.client) as sent:
        status = runtime.status.status(runtime.jobs.get(JOB))

    assert ("ListObjectsV2", "uservisits/") in sent and status["counts_as_of"] is None
    assert (status["objects"]["landed"], status["objects"]["waiting"], status["idle"]) == (2, 1, False)


def test_past_the_exact_size_a_settled_job_reads_as_the_exact_status_does(runtime, uploads):
    merge(runtime, uploads, "a.csv", "b.csv")
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/bad.csv", "garbage\n")))
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/c.csv", "1.1.1.1,u,2001-01-01,x,a,b,c,d,1\n"
                                                                         "3.3.3.3,u,2001-01-01,3,a,b,c,d,1\n")))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))

    exact, counted = runtime.status.status(runtime.jobs.get(JOB)), past_exact(runtime).status(runtime.jobs.get(JOB))

    assert exact["idle"] is True and exact["bad_rows_skipped"] == 1 and exact["objects"]["quarantined"] == 1
    assert counted["counts_as_of"] == read_counted(runtime.state_store, JOB).taken_at.isoformat()
    assert {**counted, "counts_as_of": None} == exact


def test_versions_that_had_markers_when_counted_are_followed_through_the_inbox(runtime, uploads):
    for name in ("a.csv", "b.csv"):
        runtime.mapper.handle(uploads.event(uploads.put(f"uservisits/{name}", uservisits_rows(("1.1.1.1", "1")))))
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    before = past_exact(runtime).status(runtime.jobs.get(JOB))

    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    after = past_exact(runtime).status(runtime.jobs.get(JOB))

    assert (before["idle"], before["objects"]["waiting"], before["partials_pending"]) == (False, 2, 2)
    assert before["lag_seconds"] >= 0
    assert (after["idle"], after["objects"]["waiting"], after["objects"]["merged"]) == (True, 0, 2)
    assert after["counts_as_of"] == before["counts_as_of"] and after["lag_seconds"] == 0


def test_a_version_the_reconcile_handed_over_keeps_the_job_working_until_it_counts_again(runtime, uploads):
    merge(runtime, uploads, "a.csv")
    lost = uploads.put("uservisits/lost.csv", uservisits_rows(("2.2.2.2", "2")))  # its event never comes
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    [landed] = [o.last_modified for o in runtime.input_store.list("uservisits/lost")]
    later = past_exact(runtime, clock=lambda: landed + dt.timedelta(seconds=90))

    handed_over = later.status(runtime.jobs.get(JOB))
    runtime.mapper.handle(uploads.event(lost))  # the hand-over arrives
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))
    merged_since = later.status(runtime.jobs.get(JOB))
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    counted_again = later.status(runtime.jobs.get(JOB))

    assert (handed_over["idle"], handed_over["objects"]["waiting"], handed_over["lag_seconds"]) == (False, 1, 90)
    assert (merged_since["idle"], merged_since["lag_seconds"]) == (False, 90)  # the counts cannot know yet
    assert (counted_again["idle"], counted_again["objects"]["merged"], counted_again["lag_seconds"]) == (True, 2, 0)


def test_a_version_young_when_counted_is_left_to_its_event(runtime, uploads):
    merge(runtime, uploads, "a.csv")
    record = uploads.put("uservisits/young.csv", uservisits_rows(("2.2.2.2", "2")))
    nowhere(runtime).reconcile(runtime.jobs.get(JOB))  # the event grace: its event is taken to be in flight
    runtime.mapper.handle(uploads.event(record))
    runtime.reducer.reduce_job(runtime.jobs.get(JOB))

    status = past_exact(runtime).status(runtime.jobs.get(JOB))

    assert (status["idle"], status["objects"]["waiting"], status["objects"]["merged"]) == (True, 0, 2)


def test_a_manifest_committed_before_the_totals_were_kept_costs_one_read_of_its_ledger(runtime, uploads):
    merge(runtime, uploads, "a.csv", "b.csv")
    nowhere(runtime).reconcile(runtime.jobs.get(JOB), grace=dt.timedelta(0))
    key = layout.manifest_key(JOB)
    manifest = Manifest.decode(runtime.state_store.get(key)[0])
    runtime.state_store.put(key, dataclasses.replace(manifest, summary=None).encode())
    cold = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now)  # a new API container's

    with requests_sent(runtime.client) as sent:
        status = StatusReader(cold, runtime.input_store, runtime.state_store, utc_now, exact_up_to=1).status(
            runtime.jobs.get(JOB))

    assert b"summary" not in runtime.state_store.get(key)[0]
    assert [operation for operation, name in sent if name == manifest.ledger_key] == ["GetObject"]
    assert (status["rows_read"], status["bytes_merged"] > 0, status["idle"]) == (2, True, True)

