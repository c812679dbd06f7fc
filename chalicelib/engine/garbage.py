"""Deleting state objects no one needs, never on stale information (docs/deletion.md).

A run that stops needing objects does not delete them: it writes a *garbage record* (`layout.garbage_key`)
naming them, before the step that stops referencing them (the manifest's conditional write, or deleting the
markers that named them). The collector deletes a record's keys once the record is older than a grace period
that outlives any run that could still be reading them or about to commit them (a Lambda lives at most 15
minutes; the grace is an hour), and only those that a manifest and ledger read *after* listing the candidates
prove unreferenced. It also collects leaks, objects no record names (a mapper that crashed before its marker,
a reducer that lost an ambiguous race), under the same rule: older than the grace, and unreferenced.

The order of its reads is the argument (as in Hummock's vacuum, which reads the writers' watermark only after
listing candidates):

1. list old records and old objects: the candidates;
2. list the inbox: a marker still there protects its attempt's parts (a run may apply it later);
3. read the manifest and the ledger it names: what is live now protects itself. A marker absent in 2 was
   applied (so its parts are in this ledger) or dropped (so a record older than its deletion names them);
4. list the records again: a young one protects its keys. A commit that dropped a reference after 3 wrote its
   record before committing, so before 4; readers of the manifest it replaced have until that record is old.

The API writes records too, for exports of older generations (engine/export.py), under the exports prefix,
the only place its role may write: the collector honours only export keys named there, so what the API can
write never deletes the state a result is made of.

Pure of AWS: it gets an ObjectStore and a clock.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Iterator

from ..errors import ObjectMissing
from ..storage import ObjectStore, StoredObject
from . import layout

log = logging.getLogger("tally.garbage")

# Longer than two Lambda lifetimes (15 minutes each): the run that wrote a record may take its whole lifetime to
# delete the markers it names, and a run that read one of those markers just before may take its whole
# lifetime to commit it.
GRACE = timedelta(hours=1)
_PREFIXES = (layout.parts_prefix, layout.packs_prefix, layout.results_prefix, layout.ledger_prefix)


@dataclass(frozen=True)
class Live:
    """What the committed state references: the manifest's objects and every live version's parts and packs."""

    keys: frozenset[str]

    @classmethod
    def of(cls, result_keys: Iterable[str], ledger_key: str, entries: Iterable[dict]) -> "Live":
        refs = {key for key in result_keys if key} | ({ledger_key} if ledger_key else set())
        return cls(frozenset(refs | {ref for entry in entries for ref in entry["parts"]}))


@dataclass(frozen=True)
class Collected:
    records: int = 0   # old records processed
    deleted: int = 0   # objects deleted
    kept: int = 0      # candidates found still needed


def write_record(store: ObjectStore, job: str, keys: Iterable[str], now: datetime, reason: str,
                 exports: bool = False) -> str | None:
    """Records `keys` as no longer needed by the writer; returns the record's key (None if there were none).
    Written before the step that drops the references: once that step is visible, so is this record.
    `exports`: a record of exports, kept under the exports prefix (see the module's docstring)."""
    keys = sorted(set(filter(None, keys)))
    if not keys:
        return None
    record = (layout.export_garbage_key if exports else layout.garbage_key)(job, now)
    body = {"keys": keys, "reason": reason, "at": now.isoformat()}
    store.put_if_absent(record, json.dumps(body).encode(), "application/json")
    return record


class GarbageCollector:
    """`read_live(job)` reads the manifest (as written, whatever the job's definition) and the ledger it names."""

    def __init__(self, state: ObjectStore, read_live: Callable[[str], Live], clock: Callable[[], datetime],
                 grace: timedelta = GRACE):
        self.state, self.read_live, self.clock, self.grace = state, read_live, clock, grace

    def collect(self, job: str) -> Collected:
        cutoff = self.clock() - self.grace
        old_records = [o.key for o in self._records(job) if _older(o, cutoff)]
        leaked = [o.key for prefix in _PREFIXES for o in self.state.list(prefix(job)) if _older(o, cutoff)]
        pending = {layout.attempt_of_marker(layout.id_of(o.key)) for o in self.state.list(layout.inbox_prefix(job))}
        live = self.read_live(job)
        young_records = [o.key for o in self._records(job) if o.key not in set(old_records)]
        named = self._read_records(job, old_records)
        protected = live.keys | {key for keys in self._read_records(job, young_records).values() for key in keys}
        candidates = {key for keys in named.values() for key in keys} | set(leaked)
        doomed = sorted(key for key in candidates if key not in protected and not _pending_part(key, pending))
        if doomed:
            self.state.delete(doomed)
        if old_records:
            self.state.delete(old_records)
        if doomed or old_records:
            log.info("collected garbage", extra={"job": job, "records": len(old_records), "deleted": len(doomed),
                                                 "kept": len(candidates) - len(doomed)})
        return Collected(len(old_records), len(doomed), len(candidates) - len(doomed))

    def _records(self, job: str) -> Iterator[StoredObject]:
        yield from self.state.list(layout.garbage_prefix(job))
        yield from self.state.list(layout.export_garbage_prefix(job))

    def _read_records(self, job: str, keys: list[str]) -> dict[str, list[str]]:
        exports = layout.exports_prefix(job)

        def read(key: str) -> list[str]:
            try:
                named = list(json.loads(self.state.get(key)[0])["keys"])
                if key.startswith(exports):  # the API's: exports only, whatever it names
                    return [k for k in named if k.startswith(exports) and layout.export_generation(k) is not None]
                return named
            except ObjectMissing:
                return []  # an overlapping collector processed it
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a garbage record Tally did not write", extra={"record": key})
                return []

        with ThreadPoolExecutor(8) as pool:
            return dict(zip(keys, pool.map(read, keys)))


def discard_own(store: ObjectStore, keys: Iterable[str]) -> None:
    """Deletes objects unique to the caller's own attempt that nothing can reference (a commit that certainly
    lost): the one case where no grace is needed."""
    keys = sorted(set(filter(None, keys)))
    if keys:
        store.delete(keys)


def _older(obj: StoredObject, cutoff: datetime) -> bool:
    return obj.last_modified is not None and obj.last_modified < cutoff


def _pending_part(key: str, pending: set[tuple[str, str] | None]) -> bool:
    """Whether `key` is a part of an attempt whose marker is in the inbox."""
    if "/parts/" not in key:
        return False
    return layout.attempt_of_part(key) in pending
