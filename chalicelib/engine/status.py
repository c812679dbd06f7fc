"""A job's progress: the object versions landed in its input prefix, mapped, merged, quarantined, waiting and to
retract (engine/counts.py defines them), partials pending, and `idle`, true when every version that has landed
is reflected in the served result (merged, or quarantined and reported); `lag_seconds` is the age of the oldest
version not yet reflected (0 when idle).

The dashboard asks every 2 s per job, so a status costs a few requests however large the job is:

    the reconcile's counts (layout.counts_key)  1 GET   landed, merged, quarantined, waiting, to_retract
    the inbox's first page                      1 LIST  partials_pending (partials_pending_more: it has more)
    the manifest                                1 GET   rows, generation, and the ledger's totals (rows read,
                                                        bad rows, bytes merged) that each commit keeps there

(a manifest committed before the totals were kept costs one GET of its ledger more).

Exact while small: while the reconcile last counted at most EXACT_UP_TO versions, or has not counted yet, a
status also lists the input prefix and the quarantine and reads the ledger, and every number is as of the
request (tests and `tally demo` wait on `idle`); `counts_as_of` is then null.

Past that, listing the input would cost 1,000 LISTs a poll at a million objects. The counts are the last
reconcile's, taken at `counts_as_of`, so at most one reconcile period old (TALLY_RECONCILE_EVERY_MINUTES), and
followed since through the inbox: once it holds no marker, every version that had one when the reconcile listed
is applied, and so is every version young enough then that its event was in flight; what stays waiting or to
retract is the stale part (engine/counts.py) until the next reconcile counts again. So at that scale:

- idle: the inbox's first page is empty and the reconcile found nothing stale. A version whose event is lost, or
  whose mapping is still running, among those that landed since the reconcile listed or just before, can show
  idle until the next reconcile;
- lag_seconds: the age of the oldest marker on the inbox's first page (written once its version was mapped: the
  version is older by its mapping time), or of the oldest stale version if that is older;
- landed, quarantined and the quarantine listed are as the reconcile found them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from ..jobs import Job
from ..storage import ObjectStore
from . import layout
from .counts import (Counted, InputCounts, after_inbox_drained, count_inputs, ledger_totals, quarantine_records,
                     read_counted)
from .reducer import Reducer

EXACT_UP_TO = 1000  # versions: one LIST page of the input


class StatusReader:
    def __init__(self, reducer: Reducer, input_store: ObjectStore, state_store: ObjectStore,
                 clock: Callable[[], datetime], exact_up_to: int = EXACT_UP_TO):
        self.reducer, self.input, self.state, self.clock = reducer, input_store, state_store, clock
        self.exact_up_to = exact_up_to

    def status(self, job: Job) -> dict[str, Any]:
        counted = read_counted(self.state, job.name)
        inbox = self.state.list_page(layout.inbox_prefix(job.name))
        # Per contribution: a large object's range markers are one pending version, complete or not.
        pending = {layout.contribution_of_marker(layout.id_of(o.key)) for o in inbox.objects}
        if counted is None or counted.counts.landed <= self.exact_up_to:
            manifest, ledger = self.reducer.read_committed(job)
            totals = ledger_totals(ledger)
            counts, quarantined = self._listed(job, ledger, counted)
            oldest, as_of = counts.oldest_waiting, None
        else:
            manifest, _ = self.reducer.read_manifest(job)
            # The ledger a manifest just read names is not collected for an hour (docs/deletion.md).
            totals = manifest.summary if manifest and manifest.summary is not None else \
                ledger_totals(self.reducer.read_ledger(manifest))
            counts = counted.counts if pending else after_inbox_drained(counted.counts)
            quarantined, as_of = counted.records(), counted.taken_at.isoformat()
            marked = min((o.last_modified for o in inbox.objects if o.last_modified is not None), default=None)
            oldest = min(filter(None, (marked, counts.oldest_stale)), default=None)
        return {
            "job": job.name,
            "objects": {
                "landed": counts.landed,
                "seen": counts.merged + len(pending) + counts.quarantined,
                "mapped": counts.merged + len(pending),
                "merged": counts.merged,
                "quarantined": counts.quarantined,
                "waiting": counts.waiting,
                "to_retract": counts.to_retract,
            },
            "quarantined": quarantined,
            "partials_pending": len(pending),
            "partials_pending_more": inbox.truncated,
            "rows_read": totals["rows_read"],
            "bad_rows_skipped": totals["bad_rows_skipped"],
            "bad_rows": totals["bad_rows"],
            "bytes_merged": totals["bytes_merged"],
            "rows": manifest.rows if manifest else 0,
            "rows_exact": manifest.rows_exact if manifest else True,
            "generation": manifest.generation if manifest else None,
            "last_reduce_at": manifest.committed_at if manifest else None,
            "idle": not counts.waiting and not counts.to_retract and not pending,
            "lag_seconds": round(max((self.clock() - oldest).total_seconds(), 0.0), 3) if oldest else 0.0,
            "counts_as_of": as_of,
        }

    def _listed(self, job: Job, ledger, counted: Counted | None) -> tuple[InputCounts, list[dict]]:
        """Counts from listings of the input and the quarantine; the reconcile's counts only spare reading again
        the quarantine records it read."""
        listed = [o for o in self.input.list(job.prefix) if job.matches(o.key)]
        records = {layout.id_of(o.key): o.etag for o in self.state.list(layout.quarantine_prefix(job.name))}
        counts = count_inputs(listed, dict(zip(ledger.column("key").to_pylist(), ledger.column("etag").to_pylist())),
                              records)
        held = quarantine_records(self.state, job.name, counts.held, records, counted)
        return counts, [entry["record"] for entry in held]
