"""A job's progress, computed from what is in the buckets (not from counters that could drift):
objects landed in the input prefix, mapped, merged, quarantined, partials pending, and `idle`, true exactly
when every object version that has landed is reflected in the served result (merged, or quarantined and
reported). `lag_seconds` is the age of the oldest object version not yet reflected (0 when idle)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

import pyarrow.compute as pc

from ..errors import ObjectMissing
from ..jobs import Job
from ..storage import ObjectStore
from . import layout
from .reducer import Reducer

MAX_LISTED_QUARANTINE = 100
MAX_LISTED_BAD_ROWS = 100  # objects listed with their bad rows; `bad_rows_skipped` counts them all


class StatusReader:
    def __init__(self, reducer: Reducer, input_store: ObjectStore, state_store: ObjectStore,
                 clock: Callable[[], datetime]):
        self.reducer, self.input, self.state, self.clock = reducer, input_store, state_store, clock

    def status(self, job: Job) -> dict[str, Any]:
        manifest, ledger = self.reducer.read_committed(job)
        merged = set(zip(ledger.column("key").to_pylist(), ledger.column("etag").to_pylist()))
        listed = [o for o in self.input.list(job.prefix) if job.matches(o.key)]
        landed = {(o.key, o.etag) for o in listed}
        # Per contribution: a large object's range markers are one pending version, complete or not.
        pending = {layout.contribution_of_marker(layout.id_of(o.key))
                   for o in self.state.list(layout.inbox_prefix(job.name))}
        quarantined = self._quarantined(job, landed)
        reflected = merged | {(q["key"], q["etag"]) for q in quarantined}
        waiting = landed - reflected
        gone = merged - landed  # removed or replaced in the bucket, still in the result
        return {
            "job": job.name,
            "objects": {
                "landed": len(landed),
                "seen": len(merged & landed) + len(pending) + len(quarantined),
                "mapped": len(merged & landed) + len(pending),
                "merged": len(merged & landed),
                "quarantined": len(quarantined),
                "waiting": len(waiting),
                "to_retract": len(gone),
            },
            "quarantined": quarantined[:MAX_LISTED_QUARANTINE],
            "partials_pending": len(pending),
            "rows_read": _total(ledger, "rows"),
            "bad_rows_skipped": _total(ledger, "bad_rows"),
            "bad_rows": _bad_rows(ledger),
            "bytes_merged": _total(ledger, "size"),
            "rows": manifest.rows if manifest else 0,
            "generation": manifest.generation if manifest else None,
            "last_reduce_at": manifest.committed_at if manifest else None,
            "idle": not waiting and not gone and not pending,
            "lag_seconds": self._lag(listed, waiting),
        }

    def _lag(self, listed, waiting: set[tuple[str, str]]) -> float:
        now = self.clock()
        ages = [(now - o.last_modified).total_seconds() for o in listed
                if (o.key, o.etag) in waiting and o.last_modified is not None]
        return round(max(ages, default=0.0), 3)

    def _quarantined(self, job: Job, landed: set[tuple[str, str]]) -> list[dict[str, Any]]:
        records = []
        for obj in self.state.list(layout.quarantine_prefix(job.name)):
            try:
                record = json.loads(self.state.get(obj.key)[0])
            except ObjectMissing:
                continue  # cleared by a good version meanwhile
            if (record["key"], record["etag"]) in landed:  # only the version still in the bucket counts
                records.append({"attempts": 1, **record})  # records from before attempts were counted: one
        return sorted(records, key=lambda r: r["key"])


def _bad_rows(ledger) -> list[dict[str, Any]]:
    """The live object versions that had rows skipped, by key, with the first few rows' lines and reasons."""
    if not ledger.num_rows:
        return []
    having = ledger.filter(pc.fill_null(pc.greater(ledger.column("bad_rows"), 0), False))
    having = having.select(["key", "etag", "bad_rows", "bad_row_examples"]).slice(0, MAX_LISTED_BAD_ROWS)
    return [{"key": row["key"], "etag": row["etag"], "bad_rows": row["bad_rows"],
             "examples": row["bad_row_examples"] or []} for row in having.to_pylist()]


def _total(ledger, column: str) -> int:
    value = pc.sum(ledger.column(column)).as_py() if ledger.num_rows else 0
    return int(value or 0)
