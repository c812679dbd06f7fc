"""Merge new partials into a job's result, exactly once, safe against crashes and overlapping reducers.

A run is planned as data first (`plan_reduce`: which partials to merge, which to drop as already merged), then
executed in steps whose order is the whole correctness argument:

1. write the new result and ledger under fresh, never-shared keys;
2. commit by replacing the manifest with a conditional write (If-Match the ETag read at the start, or
   If-None-Match for the first commit): of two overlapping reducers exactly one commits, the other discards
   its work and merges nothing twice;
3. only then delete the merged partials and superseded results.

A crash before 2 leaves garbage that a later run deletes; a crash after 2 leaves merged partials in the inbox,
which the ledger identifies and the next run deletes instead of merging again. The ledger also absorbs late
duplicate events: a re-written partial whose contribution is in the ledger is dropped.
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

log = logging.getLogger("tally.reducer")

LEDGER_SCHEMA = pa.schema([
    ("contribution", pa.string()), ("key", pa.string()), ("etag", pa.string()), ("version_id", pa.string()),
    ("sequencer", pa.string()), ("size", pa.int64()), ("rows", pa.int64()), ("bad_rows", pa.int64()),
    ("mapped_at", pa.string()), ("generation", pa.int64()),
])
_LEDGER_FINGERPRINT = "ledger-v1"


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


@dataclass(frozen=True)
class ReducePlan:
    job: str
    base: Manifest | None
    base_etag: str | None
    merge: tuple[tuple[str, ...], ...]  # per contribution, the keys of its parts in order
    drop: tuple[str, ...]

    @property
    def merge_keys(self) -> list[str]:
        return [key for parts in self.merge for key in parts]


@dataclass
class ReduceReport:
    job: str
    generation: int | None = None
    merged: int = 0
    dropped: int = 0
    rows: int | None = None
    conflict: bool = False
    more_pending: bool = False
    errors: list[str] = field(default_factory=list)


def plan_reduce(job: str, base: Manifest | None, base_etag: str | None, merged: set[str],
                inbox: list[str], limit: int) -> ReducePlan:
    """Pure: given the committed state and the inbox listing, decide what this run does: merge whole
    contributions not in the ledger, drop every part of those already in it, wait for incomplete ones."""
    by_contribution: dict[str, list[layout.Part]] = {}
    for key in inbox:
        part = layout.parse_part(key)
        by_contribution.setdefault(part.contribution, []).append(part)
    fresh, stale = [], []
    for contribution, parts in sorted(by_contribution.items()):
        if contribution in merged:
            stale += [part.key for part in parts]
        elif (whole := layout.complete_parts(parts)) is not None:
            fresh.append(tuple(part.key for part in whole))
    return ReducePlan(job, base, base_etag, tuple(fresh[:limit]), tuple(sorted(stale)))


class Reducer:
    def __init__(self, jobs: JobCatalog, state_store: ObjectStore, clock: Callable[[], datetime],
                 batch: int = 500):
        self.jobs, self.state, self.clock, self.batch = jobs, state_store, clock, batch

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
            return ReduceReport(job.name, conflict=True)
        except Exception as exc:  # noqa: BLE001 - reported and re-raised by reduce_all
            log.exception("reduce failed", extra={"job": job.name})
            return ReduceReport(job.name, errors=[f"{type(exc).__name__}: {exc}"])

    def plan(self, job: Job) -> ReducePlan:
        manifest, etag = self.read_manifest(job)
        with _superseded_is_conflict():
            ledger = self.read_ledger(manifest)
        merged = set(ledger.column("contribution").to_pylist())
        inbox = [o.key for o in self.state.list(layout.inbox_prefix(job.name))]
        return plan_reduce(job.name, manifest, etag, merged, inbox, self.batch)

    def reduce_job(self, job: Job) -> ReduceReport:
        plan = self.plan(job)
        report = ReduceReport(job.name, generation=plan.base.generation if plan.base else None)
        if plan.drop:
            self.state.delete(list(plan.drop))
            report.dropped = len(plan.drop)
        if not plan.merge:
            self._collect_garbage(job, plan.base)
            return report
        return self.execute(job, plan, report)

    def execute(self, job: Job, plan: ReducePlan, report: ReduceReport) -> ReduceReport:
        generation = (plan.base.generation if plan.base else 0) + 1
        partials, entries, unusable = [], [], []
        for keys in plan.merge:
            try:
                decoded = [decode(self.state.get(key)[0], job.plan.fingerprint) for key in keys]
            except ObjectMissing:
                continue  # another reducer merged and cleaned it up meanwhile; our commit will then fail
            except PartialMismatch as exc:
                log.warning("dropping partial of another job definition", extra={"key": keys[0], "error": str(exc)})
                unusable += keys
                continue
            partials += [table for table, _ in decoded]
            entries.append(_ledger_entry(layout.parse_part(keys[-1]).contribution, decoded[-1][1], generation))

        with _superseded_is_conflict():
            base_result, base_ledger = self.read_result(job, plan.base), self.read_ledger(plan.base)
        result = job.plan.merge([base_result, *partials])
        ledger = pa.concat_tables([base_ledger, pa.Table.from_pylist(entries, LEDGER_SCHEMA)])
        result_key, ledger_key = layout.generation_keys(job.name, generation)
        self.state.put_if_absent(result_key, encode(result, job.plan.fingerprint))
        self.state.put_if_absent(ledger_key, encode(ledger, _LEDGER_FINGERPRINT))
        manifest = Manifest(generation, job.plan.fingerprint, result_key, ledger_key,
                            self.clock().isoformat(), result.num_rows, ledger.num_rows)
        try:
            if plan.base_etag is None:
                self.state.put_if_absent(layout.manifest_key(job.name), manifest.encode(), "application/json")
            else:
                self.state.put_if_match(layout.manifest_key(job.name), manifest.encode(), plan.base_etag,
                                        "application/json")
        except CommitConflict:
            self.state.delete([result_key, ledger_key])
            raise
        # Committed. Everything below is clean-up that a later run redoes if we die here.
        self.state.delete([*plan.merge_keys, *unusable])
        self._collect_garbage(job, manifest)
        report.generation, report.merged, report.rows = generation, len(entries), result.num_rows
        report.more_pending = len(plan.merge) == self.batch
        log.info("merged partials", extra={"job": job.name, "generation": generation,
                                           "objects": len(entries), "rows": result.num_rows})
        return report

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


def _ledger_entry(contribution: str, meta: dict, generation: int) -> dict:
    return {
        "contribution": contribution, "key": meta["key"], "etag": meta["etag"],
        "version_id": meta.get("version_id"), "sequencer": meta.get("sequencer"), "size": meta.get("size"),
        "rows": meta.get("rows"), "bad_rows": meta.get("bad_rows", 0), "mapped_at": meta.get("mapped_at"),
        "generation": generation,
    }
