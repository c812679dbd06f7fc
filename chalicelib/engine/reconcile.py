"""Reconcile: compare a job's input prefix with what its result holds, and repair the difference.

S3 may drop an event, a throttled Lambda may give up on one, and a job added later has never seen the objects
already in its prefix. The reconcile lists the prefix and maps every object version that is neither live in
the ledger, nor waiting in the inbox, nor quarantined (that is also the backfill), and notes the removal of
every live key whose object is gone. It keeps what its listings counted for the status (engine/counts.py: one
object, so a status never lists the input), then looks for live partials that are gone (engine/repair.py) and,
last, with reads of its own made after it decided nothing else, runs the garbage collector
(engine/garbage.py).

A large object's version waits in the inbox as range markers. While some are missing and the last one landed
recently, its other ranges are taken to be in flight (Lambda retries a failed one for minutes); once that is
long past, a range was lost, and the version is mapped again: all its ranges, whose markers and parts are
rewritten as they were.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping

from ..jobs import Job, JobCatalog
from ..storage import ObjectStore, StoredObject
from . import layout
from .attempts import AttemptLog
from .counts import Counted, InputCounts, count_inputs, quarantine_records, read_counted, with_stale
from .events import ObjectEvent
from .garbage import GRACE, GarbageCollector
from .mapper import Mapper, MapOutcome
from .reducer import Reducer
from .repair import Repairer

log = logging.getLogger("tally.reconcile")
# Objects younger than this are left to their own events, which are most likely still in flight: mapping
# them here too would only duplicate the work. An on-demand backfill passes zero.
EVENT_GRACE = timedelta(minutes=2)
# An incomplete set of range markers whose newest is older than this has lost a range: async Lambda gives a
# failed invocation up after two retries, about three minutes.
RANGE_GRACE = timedelta(minutes=10)
# Hands one object version to a mapper elsewhere (an asynchronous invocation of map_object on AWS, local mode's
# worker queue), so the reconcile lists and plans but maps nothing itself.
ObjectDispatch = Callable[[ObjectEvent], None]


@dataclass(frozen=True)
class ReconcilePlan:
    job: str
    to_map: tuple[StoredObject, ...]
    removed: tuple[str, ...]
    # What the listings counted (engine/counts.py) and when; what the reconcile needs to keep those counts.
    counts: InputCounts = InputCounts()
    taken_at: datetime | None = None
    replacing: frozenset[str] = frozenset()  # keys of to_map whose live version is another
    held: Mapping[str, str] = field(default_factory=dict, compare=False)  # counts.held's record ETags


@dataclass
class ReconcileReport:
    job: str
    landed: int = 0
    mapped: list[MapOutcome] = field(default_factory=list)
    dispatched: int = 0  # objects handed to the dispatch, mapped elsewhere
    removed: int = 0
    orphans_deleted: int = 0  # state objects the garbage collector deleted
    left: int = 0  # objects still to map when the time budget ran out
    lost: int = 0  # live versions whose partials are gone: a repair marker asks the reducer to rebuild


class Reconciler:
    def __init__(self, jobs: JobCatalog, input_store: ObjectStore, state_store: ObjectStore, mapper: Mapper,
                 reducer: Reducer, clock: Callable[[], datetime], dispatch: ObjectDispatch | None = None,
                 garbage_grace: timedelta = GRACE):
        self.jobs, self.input, self.state = jobs, input_store, state_store
        self.mapper, self.reducer, self.clock = mapper, reducer, clock
        self.dispatch = dispatch  # None: map here, in this process (tests, `tally backfill`)
        self.collector = GarbageCollector(state_store, lambda name: reducer.read_live(jobs.get(name)), clock,
                                          garbage_grace)
        self.repairer = Repairer(reducer, state_store, clock)

    def plan(self, job: Job, grace: timedelta = EVENT_GRACE, range_grace: timedelta = RANGE_GRACE
             ) -> ReconcilePlan:
        _, ledger_table = self.reducer.read_committed(job)
        ledger = ledger_table.to_pylist()
        live = {(e["key"], e["etag"]) for e in ledger}
        inbox = list(self.state.list(layout.inbox_prefix(job.name)))
        waiting = awaited(inbox, self.clock() - range_grace)
        quarantined = {layout.id_of(o.key): o.etag for o in self.state.list(layout.quarantine_prefix(job.name))}
        taken_at = self.clock()
        landed = [o for o in self.input.list(job.prefix) if job.matches(o.key)]
        settled = taken_at - grace
        to_map = tuple(
            o for o in landed
            if (o.key, o.etag) not in live
            and layout.contribution_id(o.key, o.etag) not in waiting | quarantined.keys()
            and (o.last_modified is None or o.last_modified <= settled)
        )
        present = {o.key for o in landed}
        # A live key missing from the listing was removed (S3 lists what it has, strongly consistent).
        removed = tuple(sorted({e["key"] for e in ledger} - present))
        versions = {e["key"]: e["etag"] for e in ledger}
        counts = count_inputs(landed, versions, quarantined)
        held = {contribution: quarantined[contribution]
                for contribution in (layout.contribution_id(o.key, o.etag) for o in counts.held)}
        return ReconcilePlan(job.name, to_map, removed, counts, taken_at,
                             frozenset(o.key for o in to_map if o.key in versions), held)

    def reconcile(self, job: Job, max_seconds: float = 600.0, progress: Callable[[int, int], None] | None = None,
                  grace: timedelta = EVENT_GRACE, range_grace: timedelta = RANGE_GRACE) -> ReconcileReport:
        plan = self.plan(job, grace, range_grace)
        report = ReconcileReport(job.name)
        deadline = time.monotonic() + max_seconds
        for done, obj in enumerate(plan.to_map):
            if time.monotonic() > deadline:
                report.left = len(plan.to_map) - done
                break
            event = ObjectEvent(self.input.bucket, obj.key, obj.etag, obj.size, name="ObjectCreated:Reconcile",
                                jobs=(job.name,))
            if self.dispatch is None:
                report.mapped += [o for o in self.mapper.map_object(event) if o.job == job.name]
            else:
                self.dispatch(event)
                report.dispatched += 1
            if progress:
                progress(done + 1, len(plan.to_map))
        for key in plan.removed:
            if self.input.head(key) is None:  # still gone: not re-uploaded since the listing
                event = ObjectEvent(self.input.bucket, key, "", 0, name="ObjectRemoved:Reconcile")
                report.removed += len(self.mapper.note_removal(event, [job]))
        self._keep_counts(job, plan, report)
        lost = self.repairer.find_lost(job)
        self.repairer.request(job, lost)
        report.lost = len(lost.contributions)
        # Last, and on reads of its own: nothing decided above, minutes ago, may decide a deletion.
        report.orphans_deleted = self.collector.collect(job.name).deleted
        log.info("reconciled", extra={"job": job.name, "mapped": len(report.mapped), "dispatched": report.dispatched,
                                      "removed": report.removed, "orphans": report.orphans_deleted,
                                      "left": report.left, "lost": report.lost})
        return report

    def _keep_counts(self, job: Job, plan: ReconcilePlan, report: ReconcileReport) -> None:
        """Written once the removals are noted: every version then unreflected has a marker, except those it
        handed over and did not map here (stale, engine/counts.py) and the young ones, left to their events."""
        known, taken_at = read_counted(self.state, job.name), plan.taken_at or self.clock()
        if known is not None and known.taken_at > taken_at:
            return  # an overlapping run (a schedule is delivered at least once) listed later and counted first
        mapped_here = {(o.key, o.etag) for o in report.mapped if o.outcome == "mapped"}
        stale = [o for o in plan.to_map if (o.key, o.etag) not in mapped_here]
        records = quarantine_records(self.state, job.name, plan.counts.held, plan.held, known)
        counted = Counted(taken_at, with_stale(plan.counts, stale, plan.replacing), tuple(records))
        self.state.put(layout.counts_key(job.name), counted.encode(), "application/json")

    def reconcile_all(self, max_seconds: float = 600.0) -> list[ReconcileReport]:
        """Every job. A failing job does not stop the others, but the run still fails at the end so the
        failure is seen (and Lambda records it)."""
        deadline = time.monotonic() + max_seconds
        reports, failures = [], []
        for job in self.jobs:
            try:
                reports.append(self.reconcile(job, max(0.0, deadline - time.monotonic())))
            except Exception as exc:  # noqa: BLE001 - logged with its job, re-raised with the others below
                log.exception("reconcile failed", extra={"job": job.name})
                failures.append(f"{job.name}: {type(exc).__name__}: {exc}")
        # Shared by every job, not any one's: once a run each. A failure is logged as a job's, and fails the run.
        sweeps = {"attempt records": lambda: AttemptLog(self.state).sweep(self.input, self.clock(),
                                                                          self.collector.grace)}
        collect_dropped = getattr(self.jobs, "collect_dropped", None)  # a catalog with run-time views
        if collect_dropped is not None:
            sweeps["dropped views"] = lambda: collect_dropped(self.collector.grace, self.clock())
        for what, sweep in sweeps.items():
            try:
                sweep()
            except Exception as exc:  # noqa: BLE001 - as a job's failure
                log.exception("sweeping failed", extra={"what": what})
                failures.append(f"{what}: {type(exc).__name__}: {exc}")
        if failures:
            raise RuntimeError("; ".join(failures))
        return reports


def awaited(inbox: Iterable[StoredObject], lost_before: datetime) -> set[str]:
    """Contributions the inbox will bring into the result: those with a whole version's marker or a complete
    set of range markers, and incomplete sets still expecting ranges (their newest marker is from after
    `lost_before`)."""
    whole: set[str] = set()
    ranges: dict[tuple[str, int], list[tuple[int, StoredObject]]] = {}
    for obj in inbox:
        marker = layout.id_of(obj.key)
        contribution, in_range = layout.contribution_of_marker(marker), layout.range_of_marker(marker)
        if in_range is None:
            whole.add(contribution)
        else:
            ranges.setdefault((contribution, in_range[1]), []).append((in_range[0], obj))
    for (contribution, count), markers in ranges.items():
        newest = max((o.last_modified for _, o in markers if o.last_modified is not None), default=None)
        # A range mapped twice has two markers: count the ranges, not the markers.
        if len({index for index, _ in markers}) == count or newest is None or newest > lost_before:
            whole.add(contribution)
    return whole
