"""Apply a job's inbox to its result, exactly once, safe against crashes and overlapping reducers.

A run gathers the committed state, the inbox markers and what S3 says is current for the keys they touch,
plans the changes as data (`changes.plan_changes`), then executes in steps whose order is the correctness
argument:

1. write the new result and ledger under fresh, never-shared keys;
2. commit by replacing the manifest with a conditional write (If-Match the ETag read at the start, or
   If-None-Match for the first commit): of two overlapping reducers exactly one commits, the other discards
   its work and applies nothing twice;
3. only then delete the processed markers, the parts no version needs any more, and superseded results.

A crash before 2 leaves garbage that a later run deletes; a crash after 2 leaves processed markers, which the
ledger turns into no-ops on the next run. Late duplicates are no-ops the same way.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Callable

import pyarrow as pa

from ..aggregation.codec import decode, encode
from ..errors import CommitConflict, ObjectMissing, PartialMismatch
from ..jobs import Job, JobCatalog
from ..storage import ObjectStore
from . import layout
from .changes import ChangePlan, Current, plan_changes

log = logging.getLogger("tally.reducer")

LEDGER_SCHEMA = pa.schema([
    ("contribution", pa.string()), ("key", pa.string()), ("etag", pa.string()), ("version_id", pa.string()),
    ("sequencer", pa.string()), ("size", pa.int64()), ("rows", pa.int64()), ("bad_rows", pa.int64()),
    ("mapped_at", pa.string()), ("generation", pa.int64()), ("parts", pa.list_(pa.string())),
])
_LEDGER_FINGERPRINT = "ledger-v2"


@dataclass(frozen=True)
class Manifest:
    generation: int
    fingerprint: str
    result_key: str
    ledger_key: str
    committed_at: str
    rows: int
    objects: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        return cls(**json.loads(data))


@dataclass
class ReduceReport:
    job: str
    generation: int | None = None
    merged: int = 0
    retracted: int = 0
    dropped: int = 0
    rows: int | None = None
    conflict: bool = False
    more_pending: bool = False
    errors: list[str] = field(default_factory=list)
    landed: list[str] = field(default_factory=list)  # event times of the merged objects (lag metric)


@dataclass(frozen=True)
class Gathered:
    """Everything a run decides from, read at its start."""

    manifest: Manifest | None
    manifest_etag: str | None
    ledger: pa.Table
    markers: list[dict]
    current: dict[str, Current | None]
    more_pending: bool

    @property
    def entries(self) -> dict[str, dict]:
        return {entry["key"]: entry for entry in self.ledger.to_pylist()}


class Reducer:
    def __init__(self, jobs: JobCatalog, state_store: ObjectStore, input_store: ObjectStore,
                 clock: Callable[[], datetime], batch: int = 500):
        self.jobs, self.state, self.input, self.clock, self.batch = jobs, state_store, input_store, clock, batch

    # -- reading committed state -------------------------------------------------------------------------

    def read_manifest(self, job: Job) -> tuple[Manifest | None, str | None]:
        try:
            data, etag = self.state.get(layout.manifest_key(job.name))
        except ObjectMissing:
            return None, None
        manifest = Manifest.decode(data)
        if manifest.fingerprint != job.plan.fingerprint:
            # The job's definition changed: state computed under the old one must not leak into the new.
            log.warning("job definition changed; starting a new result", extra={"job": job.name})
            return replace(manifest, result_key="", ledger_key="", rows=0, objects=0), etag
        return manifest, etag

    def read_ledger(self, manifest: Manifest | None) -> pa.Table:
        if manifest is None or not manifest.ledger_key:
            return LEDGER_SCHEMA.empty_table()
        return decode(self.state.get(manifest.ledger_key)[0], _LEDGER_FINGERPRINT)[0]

    def read_result(self, job: Job, manifest: Manifest | None) -> pa.Table:
        if manifest is None or not manifest.result_key:
            return job.plan.empty()
        return decode(self.state.get(manifest.result_key)[0], job.plan.fingerprint)[0]

    def read_parts(self, job: Job, keys: list[str]) -> list[pa.Table]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda key: decode(self.state.get(key)[0], job.plan.fingerprint)[0], keys))

    # -- running -------------------------------------------------------------------------------------------

    def reduce_all(self, max_seconds: float = 40.0, parallelism: int = 4) -> list[ReduceReport]:
        """Every job, until nothing is pending or the time budget is spent. Jobs are independent, so they run
        side by side (Arrow and boto3 release the GIL). A failing job does not stop the others, but the run
        still fails at the end so the failure is seen (and Lambda records it)."""
        deadline = time.monotonic() + max_seconds

        def drain(job: Job) -> list[ReduceReport]:
            reports = []
            while True:
                report = self._reduce_guarded(job)
                reports.append(report)
                if not report.more_pending or report.errors or time.monotonic() > deadline:
                    return reports

        with ThreadPoolExecutor(max(1, min(parallelism, len(self.jobs)))) as pool:
            reports = [report for batch in pool.map(drain, self.jobs) for report in batch]
        failed = [r for r in reports if r.errors]
        if failed:
            raise RuntimeError("; ".join(f"{r.job}: {e}" for r in failed for e in r.errors))
        return reports

    def _reduce_guarded(self, job: Job) -> ReduceReport:
        try:
            return self.reduce_job(job)
        except CommitConflict as exc:
            log.info("another reducer committed first", extra={"job": job.name, "detail": str(exc)})
            return ReduceReport(job.name, conflict=True, more_pending=True)
        except Exception as exc:  # noqa: BLE001 - reported and re-raised by reduce_all
            log.exception("reduce failed", extra={"job": job.name})
            return ReduceReport(job.name, errors=[f"{type(exc).__name__}: {exc}"])

    def gather(self, job: Job) -> Gathered:
        manifest, etag = self.read_manifest(job)
        with _superseded_is_conflict():
            ledger = self.read_ledger(manifest)
        listed = [o.key for o in self.state.list(layout.inbox_prefix(job.name))]
        with ThreadPoolExecutor(8) as pool:
            markers = [m for m in pool.map(self._read_marker, listed[: self.batch]) if m is not None]
            keys = sorted({m["key"] for m in markers})
            heads = dict(zip(keys, pool.map(self.input.head, keys)))
        current = {key: head and Current(head.etag, head.version_id) for key, head in heads.items()}
        return Gathered(manifest, etag, ledger, markers, current, len(listed) > self.batch)

    def _read_marker(self, key: str) -> dict | None:
        try:
            marker = json.loads(self.state.get(key)[0])
            if marker.get("kind") in ("put", "removed") and marker.get("key") and marker.get("contribution"):
                return marker
        except ObjectMissing:
            return None  # processed by an overlapping run meanwhile
        except ValueError:
            pass
        log.warning("deleting a marker Tally did not write", extra={"marker": key})
        self.state.delete([key])
        return None

    def reduce_job(self, job: Job) -> ReduceReport:
        gathered = self.gather(job)
        plan = plan_changes(gathered.entries, gathered.markers, gathered.current)
        report = ReduceReport(job.name, generation=gathered.manifest.generation if gathered.manifest else None,
                              more_pending=gathered.more_pending)
        if plan.changes_result:
            self.execute(job, gathered, plan, report)
        report.dropped = len(plan.processed) - report.merged
        # Committed, or nothing to commit. Clean-up only: a crash here is redone by the next run.
        self.state.delete([layout.inbox_key(job.name, marker) for marker in plan.processed])
        self._delete_parts(job, plan.stale_contributions)
        self._collect_garbage(job, gathered.manifest if not plan.changes_result else None)
        return report

    def execute(self, job: Job, gathered: Gathered, plan: ChangePlan, report: ReduceReport) -> None:
        generation = (gathered.manifest.generation if gathered.manifest else 0) + 1
        entries = gathered.entries
        for entry in plan.retract:
            entries.pop(entry["key"], None)
        for marker in plan.add:
            entries[marker["key"]] = _ledger_entry(marker, generation)
        added = self._read_added_parts(job, plan)
        with _superseded_is_conflict():
            base = self.read_result(job, gathered.manifest)
        if not plan.retract:
            result = job.plan.merge([base, *added])
        elif job.plan.subtractable:
            removed = self.read_parts(job, [key for entry in plan.retract for key in entry["parts"]])
            result = job.plan.retract(base, removed, added)
        else:  # min/max: rebuild from every live version's retained parts
            log.info("rebuilding result from retained partials", extra={"job": job.name, "objects": len(entries)})
            result = job.plan.merge(self.read_parts(job, [k for e in entries.values() for k in e["parts"]]))
        ledger = pa.Table.from_pylist(sorted(entries.values(), key=lambda e: e["key"]), LEDGER_SCHEMA)
        manifest = self._commit(job, gathered, generation, result, ledger)
        self._collect_garbage(job, manifest)
        report.generation, report.rows = generation, result.num_rows
        report.merged, report.retracted = len(plan.add), len(plan.retract)
        report.landed = [t for t in (m.get("event_time") or m.get("mapped_at") for m in plan.add) if t]
        log.info("applied changes", extra={"job": job.name, "generation": generation, "added": len(plan.add),
                                           "retracted": len(plan.retract), "rows": result.num_rows})

    def _read_added_parts(self, job: Job, plan: ChangePlan) -> list[pa.Table]:
        def read(marker: dict) -> list[pa.Table] | None:
            try:
                return [decode(self.state.get(key)[0], job.plan.fingerprint)[0] for key in marker["parts"]]
            except (ObjectMissing, PartialMismatch):
                return None

        with ThreadPoolExecutor(8) as pool:
            read_parts = list(pool.map(read, plan.add))
        broken = [marker for marker, tables in zip(plan.add, read_parts) if tables is None]
        if broken:
            # Parts gone (a stale version's clean-up raced its re-mapping) or written for another definition
            # of the job: drop those markers and retry; the reconcile maps a still-current version again.
            log.warning("dropping markers with unusable parts",
                        extra={"job": job.name, "keys": [m["key"] for m in broken]})
            self.state.delete([layout.inbox_key(job.name, m["contribution"]) for m in broken])
            self._delete_parts(job, tuple(m["contribution"] for m in broken))
            raise CommitConflict("markers with unusable parts were dropped; retrying without them")
        return [table for tables in read_parts for table in tables]

    def _commit(self, job: Job, gathered: Gathered, generation: int, result: pa.Table, ledger: pa.Table):
        result_key, ledger_key = layout.generation_keys(job.name, generation)
        self.state.put_if_absent(result_key, encode(result, job.plan.fingerprint))
        self.state.put_if_absent(ledger_key, encode(ledger, _LEDGER_FINGERPRINT))
        manifest = Manifest(generation, job.plan.fingerprint, result_key, ledger_key,
                            self.clock().isoformat(), result.num_rows, ledger.num_rows)
        try:
            if gathered.manifest_etag is None:
                self.state.put_if_absent(layout.manifest_key(job.name), manifest.encode(), "application/json")
            else:
                self.state.put_if_match(layout.manifest_key(job.name), manifest.encode(),
                                        gathered.manifest_etag, "application/json")
        except CommitConflict:
            self.state.delete([result_key, ledger_key])
            raise
        return manifest

    def _delete_parts(self, job: Job, contributions: tuple[str, ...]) -> None:
        keys = [o.key for c in contributions for o in self.state.list(layout.parts_prefix(job.name, c))]
        if keys:
            self.state.delete(keys)

    def _collect_garbage(self, job: Job, manifest: Manifest | None) -> None:
        """Delete results and ledgers superseded by the committed generation, and orphans of lost races.
        Newer generations are left alone: they may belong to a reducer that is about to commit."""
        if manifest is None:
            return
        live = {manifest.result_key, manifest.ledger_key}
        garbage = [
            o.key
            for prefix in (layout.results_prefix(job.name), layout.ledger_prefix(job.name))
            for o in self.state.list(prefix)
            if o.key not in live and layout.generation_of(o.key) <= manifest.generation
        ]
        if garbage:
            self.state.delete(garbage)


@contextmanager
def _superseded_is_conflict():
    """The generation we started from was replaced and collected by a reducer that committed meanwhile:
    that is a lost race, not an error; our commit would fail its If-Match anyway."""
    try:
        yield
    except ObjectMissing as exc:
        raise CommitConflict(f"state moved on while reading it: {exc}") from exc


def _ledger_entry(marker: dict, generation: int) -> dict:
    return {
        "contribution": marker["contribution"], "key": marker["key"], "etag": marker.get("etag"),
        "version_id": marker.get("version_id"), "sequencer": marker.get("sequencer"), "size": marker.get("size"),
        "rows": marker.get("rows"), "bad_rows": marker.get("bad_rows", 0), "mapped_at": marker.get("mapped_at"),
        "generation": generation, "parts": marker["parts"],
    }
