"""Repairing a result whose committed state lost objects (deleted by hand, by a lifecycle rule, by a bug).

Tally never deletes what a committed manifest can still name (docs/deletion.md), so this is for state lost from
outside. Two cases:

- **A live version's partial is gone** (a part or pack the ledger names): the result still counts the version,
  but can no longer retract it, nor rebuild from it. A *repair marker* in the inbox names the lost
  contributions; the next reducer run drops them from the ledger and rebuilds the result from every other live
  version's partials, and the reconcile then maps each affected key's current version again, as for any key
  the result is missing. The reducer writes the marker itself when a run finds a partial gone; the reconcile
  and `tally repair` find them by comparing the ledger with a listing.
- **The ledger or a result shard is gone**: nothing to rebuild from. `tally repair --reset` commits an empty
  result, so the reconcile maps the whole prefix again (a backfill).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from ..errors import CommitConflict, ObjectMissing
from ..jobs import Job
from ..storage import ObjectStore
from . import garbage, layout
from .reducer import Manifest, Reducer

log = logging.getLogger("tally.reconcile")


@dataclass(frozen=True)
class Lost:
    contributions: tuple[str, ...]  # live versions whose partials are gone
    keys: tuple[str, ...]  # the missing objects


class Repairer:
    def __init__(self, reducer: Reducer, state: ObjectStore, clock: Callable[[], datetime]):
        self.reducer, self.state, self.clock = reducer, state, clock

    def find_lost(self, job: Job) -> Lost:
        """Live versions whose parts or packs are gone. The ledger is read before the listing: a part it names
        was written before the commit that named it, and is deleted (after the grace period) only once a later
        commit stops naming it, so whatever it names and the listing lacks is lost; a HEAD confirms each."""
        _, ledger = self.reducer.read_committed(job)
        entries = ledger.select(["contribution", "parts"]).to_pylist()
        named = {ref for entry in entries for ref in entry["parts"]}
        if not named:
            return Lost((), ())
        listed = {o.key for prefix in (layout.parts_prefix(job.name), layout.packs_prefix(job.name))
                  for o in self.state.list(prefix)}
        missing = sorted(key for key in named - listed if self.state.head(key) is None)
        lost = sorted({entry["contribution"] for entry in entries if set(entry["parts"]) & set(missing)})
        if lost:
            log.error("live partials are missing", extra={"job": job.name, "missing": missing[:20],
                                                          "contributions": len(lost)})
        return Lost(tuple(lost), tuple(missing))

    def request(self, job: Job, lost: Lost) -> str | None:
        """Asks the next reducer run to drop the lost versions and rebuild without them."""
        if not lost.contributions:
            return None
        marker = layout.repair_marker()
        body = {"kind": "repair", "lost": list(lost.contributions), "missing": list(lost.keys[:100]),
                "at": self.clock().isoformat()}
        self.state.put(layout.inbox_key(job.name, marker), json.dumps(body).encode(), "application/json")
        return marker

    def reset(self, job: Job) -> Manifest:
        """Commits an empty result over whatever the manifest names (with the same conditional write as a
        reducer): for a lost ledger or result. The old objects go to a garbage record first."""
        manifest, etag = self.reducer.read_manifest(job, as_written=True)
        if manifest is None:
            raise CommitConflict(f"job {job.name!r} has no result to reset")
        now = self.clock()
        generation = manifest.generation + 1
        old = [*manifest.result_keys, manifest.ledger_key]
        try:
            _, ledger = self.reducer.read_committed(job)
            old += [ref for refs in ledger.column("parts").to_pylist() for ref in refs]
        except ObjectMissing:
            pass  # the ledger is what was lost; its parts are left to the collector's sweep
        garbage.write_record(self.state, job.name, old, now, "reset")
        empty = Manifest(generation, job.plan.fingerprint, (), "", now.isoformat(), 0, 0)
        self.state.put_if_match(layout.manifest_key(job.name), empty.encode(), etag, "application/json")
        log.warning("result reset: the reconcile maps the prefix again", extra={"job": job.name,
                                                                                 "generation": generation})
        return empty
