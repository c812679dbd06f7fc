"""Apply a job's inbox to its result, exactly once, safe against crashes, overlapping reducers and lost
responses.

A run gathers the committed state, the inbox markers and what S3 says is current for the keys they touch,
plans the changes as data (`changes.plan_changes`), then executes in steps whose order is the correctness
argument:

1. write the new result (the shards it changes), its ledger and pack under fresh keys unique to this attempt,
   and a garbage record naming what the commit stops referencing (engine/garbage.py);
2. commit by replacing the manifest with a conditional write (If-Match the ETag read at the start, or
   If-None-Match for the first commit): of two overlapping reducers exactly one commits, the other applies
   nothing. A conflict may also be our own write whose response was lost and whose retry met the 412: the
   manifest is read back, and names our ledger (unique to this attempt) if the write applied;
3. only then delete the processed markers.

Nothing is deleted on stale information (docs/deletion.md): a run deletes at once only what is unique to its
own attempt and certainly unreferenced (the objects of a commit that certainly lost). Everything else it stops
needing, superseded results, retracted versions' parts, stale or repeated attempts' parts, goes through a
garbage record, which the collector acts on after a grace period longer than any run, and only for keys a
manifest read then proves unreferenced. A run that decided a version is stale may therefore overlap one that
makes it live: the parts stay, and the live result can still retract it.

A crash before 2 leaves garbage that the collector deletes; a crash after 2 leaves processed markers, which the
ledger turns into no-ops on the next run. Late duplicates are no-ops the same way. An object the committed
state names that is missing while the manifest has not moved on is lost state, not a race: an error with a
metric, and for lost partials a repair marker (engine/repair.py).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregation.codec import conform, decode, encode
from ..aggregation.runfile import decode_any, encode_run
from ..aggregation.partition import shard_of
from ..errors import CommitConflict, ObjectMissing, PartialMismatch, ReduceFailed, StateMissing
from ..jobs import Job, JobCatalog
from ..storage import ObjectStore
from . import boards, garbage, layout, scan
from .blocks import ByteCache
from .changes import ChangePlan, Current, IncompleteRanges, combine_ranges, marker_ids, plan_changes, released
from .counts import ledger_totals
from .runs import REWRITE_GROUPS, Run, board_key, merge_runs, pick_compaction, shard_rows
from .sharded import SHARD_GROUPS, Changes, ShardedUpdate, Shards, shard_count, update_shards

log = logging.getLogger("tally.reducer")

LEDGER_SCHEMA = pa.schema([
    ("contribution", pa.string()), ("key", pa.string()), ("etag", pa.string()), ("version_id", pa.string()),
    ("sequencer", pa.string()), ("size", pa.int64()), ("rows", pa.int64()), ("bad_rows", pa.int64()),
    ("mapped_at", pa.string()), ("generation", pa.int64()), ("parts", pa.list_(pa.string())),
    ("bad_row_examples", pa.list_(pa.string())),
])
_LEDGER_FINGERPRINT = "ledger-v2"
# A listing page holds 1,000 keys: worth it over HEADs from about this many keys, if enough of a page is ours.
# Listing the keys' range is worth it from a few keys on, while at least one listed key in LISTED_PER_KEY is ours.
LIST_MIN_KEYS, LISTED_PER_KEY = 4, 20
MAX_GROUPS_PER_RUN = 2_000_000  # groups of partials one job's run merges at most (Settings.reduce_max_groups)
_CONTRIBUTION = "__contribution"  # a pack's column: whose partial a row is
# Decoded runs and ledgers kept by a warm reducer, by their in-memory size: a Lambda's memory bounds it, not the
# number of shards and runs.
CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Manifest:
    generation: int
    fingerprint: str
    shards: Shards  # each shard's live runs, oldest first (engine/runs.py)
    ledger_key: str
    committed_at: str
    rows: int  # groups; an upper bound while a shard has several runs (runs.shard_rows)
    objects: int
    # The ledger's totals (counts.ledger_totals), so a status need not read the ledger; None in a manifest
    # committed before they were kept.
    summary: dict | None = field(default=None, compare=False)
    # Not stored: the objects of a manifest written under another definition of the job, which the first
    # commit under this one stops referencing.
    other_definition: tuple[str, ...] = field(default=(), compare=False)

    def encode(self) -> bytes:
        fields = asdict(self)
        del fields["other_definition"]
        fields["shards"] = [[[run.key, run.rows, *([run.board] if run.board else [])] for run in runs]
                            for runs in self.shards]
        if self.summary is None:
            del fields["summary"]
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        fields = json.loads(data)
        if "result_key" in fields:  # committed before results were sharded: one shard
            fields["result_keys"] = [fields.pop("result_key")]
        if "result_keys" in fields:  # committed before shards were runs: one run each, its rows not kept
            keys = fields.pop("result_keys")
            share = fields["rows"] // max(1, sum(1 for key in keys if key))
            fields["shards"] = [[[key, share]] if key else [] for key in keys]
        # A run is [key, rows], or [key, rows, board] once it names a leaderboard.
        shards = tuple(tuple(Run(*run) for run in runs) for runs in fields.pop("shards"))
        return cls(**fields, shards=shards)

    @property
    def result_keys(self) -> tuple[str, ...]:
        """Every run of every shard, and the leaderboards they name."""
        return tuple(key for runs in self.shards for run in runs for key in run.keys)

    @property
    def rows_exact(self) -> bool:
        """Whether `rows` counts the groups exactly: every shard is one run (or none)."""
        return all(len(runs) <= 1 for runs in self.shards)

    @property
    def result_id(self) -> str:
        """Names this result's content: a cache key for what is computed from it."""
        return "/".join(shard_id(runs) for runs in self.shards)


def key_row(job: Job, key: dict) -> pa.Table:
    """One group's key columns (`key`: their values by name), typed as the result's."""
    types = job.plan.state_schema
    return pa.table({name: pa.array([key[name]], types.field(name).type) for name in job.plan.key_names})


def shard_id(runs: Iterable[Run]) -> str:
    """Names one shard's content."""
    return "|".join(run.key for run in runs)


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
    missing: int = 0  # objects the committed state names that are gone (StateMissing)
    repaired: int = 0  # live versions dropped because their partials were lost (the result rebuilt without them)
    compacted: int = 0  # runs merged by compaction after the run
    pending: int | None = None  # markers in the inbox when the run listed it (None: it could not list it)
    pending_since: str | None = None  # when the oldest of them was written (lag metric, even when stuck)


@dataclass(frozen=True)
class Applied:
    result: ShardedUpdate     # the new table of each shard the changes touch
    entries: dict[str, dict]  # the live version of each input key
    pack: pa.Table | None     # the inline partials made live, to keep


class UnusableParts(Exception):
    def __init__(self, markers: list[dict]):
        super().__init__(f"{len(markers)} markers with unusable parts")
        self.markers = markers


@dataclass(frozen=True)
class Gathered:
    """Everything a run decides from, read at its start."""

    manifest: Manifest | None
    manifest_etag: str | None
    ledger: pa.Table
    markers: list[dict]  # complete sets of range markers combined (changes.combine_ranges)
    current: dict[str, Current | None]
    more_pending: bool
    incomplete: tuple[IncompleteRanges, ...] = ()
    quarantined: frozenset[str] = frozenset()  # contributions of incomplete sets that will never complete
    read: tuple[dict, ...] = ()  # every marker read, as written (range markers and repeats not combined)

    @property
    def entries(self) -> dict[str, dict]:
        return {entry["key"]: entry for entry in self.ledger.to_pylist()}

    def plan(self) -> ChangePlan:
        return plan_changes(self.entries, self.markers, self.current, self.incomplete, self.quarantined)


class Reducer:
    def __init__(self, jobs: JobCatalog, state_store: ObjectStore, input_store: ObjectStore,
                 clock: Callable[[], datetime], batch: int = 500, parallelism: int = 4,
                 shard_groups: int = SHARD_GROUPS, max_groups: int = MAX_GROUPS_PER_RUN,
                 rewrite_groups: int = REWRITE_GROUPS, cache_bytes: int = CACHE_BYTES):
        self.jobs, self.state, self.input, self.clock, self.batch = jobs, state_store, input_store, clock, batch
        self.parallelism, self.shard_groups, self.max_groups = parallelism, shard_groups, max_groups
        self.rewrite_groups, self.cache_bytes = rewrite_groups, cache_bytes
        self._recent = ByteCache(cache_bytes)  # jobs reduce in parallel threads: it takes its own lock

    # -- reading committed state -------------------------------------------------------------------------

    def read_manifest(self, job: Job, as_written: bool = False) -> tuple[Manifest | None, str | None]:
        try:
            data, etag = self.state.get(layout.manifest_key(job.name))
        except ObjectMissing:
            return None, None
        manifest = Manifest.decode(data)
        if manifest.fingerprint != job.plan.fingerprint and not as_written:
            # The job's definition changed: state computed under the old one must not leak into the new.
            log.warning("job definition changed; starting a new result", extra={"job": job.name})
            return replace(manifest, shards=(), ledger_key="", rows=0, objects=0, summary=None,
                           other_definition=(*manifest.result_keys, manifest.ledger_key)), etag
        return manifest, etag

    def read_live(self, job: Job) -> garbage.Live:
        """Every object the committed state references, under whichever definition wrote it: what the garbage
        collector must not delete."""
        manifest, ledger = self.read_committed(job, as_written=True)
        if manifest is None:
            return garbage.Live(frozenset())
        return garbage.Live.of(manifest.result_keys, manifest.ledger_key, ledger.select(["parts"]).to_pylist())

    def read_ledger(self, manifest: Manifest | None) -> pa.Table:
        if manifest is None or not manifest.ledger_key:
            return LEDGER_SCHEMA.empty_table()
        # A ledger written before a column was added reads with that column empty.
        return conform(self._read_immutable(manifest.ledger_key, _LEDGER_FINGERPRINT), LEDGER_SCHEMA)

    def read_committed(self, job: Job, as_written: bool = False) -> tuple[Manifest | None, pa.Table]:
        """The manifest and the ledger it names, consistent: once the collector has deleted a retired ledger,
        the manifest that named it is long replaced, so read both again. `as_written`: as read_manifest."""
        for attempt in range(5):
            manifest, _ = self.read_manifest(job, as_written)
            try:
                return manifest, self.read_ledger(manifest)
            except ObjectMissing:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def read_result(self, job: Job, manifest: Manifest | None) -> pa.Table:
        """The whole committed result: every shard's rows (each shard sorted by key, the shards in no order)."""
        shards = [runs for runs in (manifest.shards if manifest else ()) if runs]
        if not shards:
            return self._empty_result(job)
        with ThreadPoolExecutor(max(1, min(8, len(shards)))) as pool:
            tables = list(pool.map(lambda runs: self.read_shard(job, runs), shards))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def shard_holding(self, job: Job, manifest: Manifest | None, key: dict) -> tuple[Run, ...]:
        """The runs of the shard that holds the group `key` (its key columns' values): one shard answers for
        one group however large the result is."""
        if manifest is None or not any(manifest.shards):
            return ()
        if len(manifest.shards) == 1:
            return manifest.shards[0]
        return manifest.shards[int(shard_of(key_row(job, key), job.plan.key_names, len(manifest.shards))[0])]

    def read_shard(self, job: Job, runs: tuple[Run, ...]) -> pa.Table:
        """One committed shard: its runs merged, sorted by key."""
        if not runs:
            return self._empty_result(job)
        tables = [self._read_immutable(run.key, job.plan.fingerprint) for run in runs]
        if len(tables) == 1 or job.is_scan:
            return tables[0]
        return merge_runs(job.plan, tables, includes_oldest=True)

    @staticmethod
    def _empty_result(job: Job) -> pa.Table:
        return scan.FILES_SCHEMA.empty_table() if job.is_scan else job.plan.empty()

    def _read_immutable(self, key: str, fingerprint: str) -> pa.Table:
        """Results and ledgers are never rewritten under a key, so the last ones read or written are kept:
        a warm reducer (a Lambda container, local mode) does not fetch and decode its own result every run."""
        table = self._recent.get(key)
        if table is None:
            table = decode_any(self.state.get(key)[0], fingerprint)  # a run of blocks, or as written before
            self._remember(key, table)
        return table

    def _remember(self, key: str, table: pa.Table) -> None:
        self._recent.put(key, table, table.nbytes)

    def _forget(self, keys: Iterable[str]) -> None:
        self._recent.discard(keys)

    def read_parts(self, job: Job, keys: list[str]) -> list[pa.Table]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda key: decode(self.state.get(key)[0], job.plan.fingerprint)[0], keys))

    # -- running -------------------------------------------------------------------------------------------

    def reduce_all(self, max_seconds: float = 40.0) -> list[ReduceReport]:
        """Every job, until nothing is pending or the time budget is spent. Jobs are independent, so they run
        side by side (Arrow and boto3 release the GIL). A failing job does not stop the others: its report
        carries the error, and `raise_failures` fails the invocation once the reports are logged and counted."""
        deadline = time.monotonic() + max_seconds

        def drain(job: Job) -> list[ReduceReport]:
            reports = []
            while True:
                report = self.reduce_reported(job)
                reports.append(report)
                if not report.more_pending or report.errors or time.monotonic() > deadline:
                    break
            # Compaction runs once the inbox is drained, in the time left: it bounds what reads merge, while
            # the changes waiting bound how current the result is.
            while not report.errors and not report.more_pending and time.monotonic() < deadline:
                merged = self.compact_reported(job, report)
                if not merged:
                    break
                report.compacted += merged
            return reports

        with ThreadPoolExecutor(max(1, min(self.parallelism, len(self.jobs)))) as pool:
            return [report for batch in pool.map(drain, self.jobs) for report in batch]

    def compact_reported(self, job: Job, report: ReduceReport) -> int:
        """`compact`, its failure in `report` (a lost race is not a failure)."""
        try:
            return self.compact(job)
        except CommitConflict as exc:
            log.info("the result moved on while compacting", extra={"job": job.name, "detail": str(exc)})
        except Exception as exc:  # noqa: BLE001 - reported and re-raised by reduce_all
            log.exception("compaction failed", extra={"job": job.name})
            report.errors.append(f"compaction: {type(exc).__name__}: {exc}")
        return 0

    def compact(self, job: Job, pick: Callable[[tuple[Run, ...]], tuple[int, int] | None] = pick_compaction) -> int:
        """One compaction commit: in the shards whose runs `runs.pick_compaction` names, up to `max_groups`
        rows of runs together (at least one shard's), those runs are merged into one, and the manifest is
        replaced by one naming it instead of them. The replaced runs go to a garbage record first, as every
        run a commit stops naming. Returns the runs merged (0: nothing to do).

        Like persist's ApplyMergeResult, the merge applies to whatever manifest is current when it commits, if
        its input runs are still live there in the same order: a reducer commit meanwhile only appends runs, so
        compaction does not lose to one. Groups and ledger do not change, so neither does the generation."""
        if job.is_scan:
            return 0
        manifest, etag = self.read_manifest(job)
        if manifest is None or manifest.other_definition:
            return 0
        chosen: dict[int, tuple[int, int]] = {}
        rows = 0
        for shard, runs in enumerate(manifest.shards):
            window = pick(runs)
            if window is None:
                continue
            size = shard_rows(runs[window[0]:window[1]])
            if chosen and rows + size > self.max_groups:
                break
            chosen[shard], rows = window, rows + size
        if not chosen:
            return 0
        key = layout.generation_keys(job.name, manifest.generation).result
        inputs = {shard: manifest.shards[shard][start:end] for shard, (start, end) in chosen.items()}

        def merge(shard: int) -> pa.Table:
            start, _ = chosen[shard]
            tables = [self._read_immutable(run.key, job.plan.fingerprint) for run in inputs[shard]]
            return merge_runs(job.plan, tables, includes_oldest=start == 0)

        with self._missing_classified(job, etag), ThreadPoolExecutor(max(1, min(self.parallelism, len(chosen)))) as pool:
            merged = dict(zip(chosen, pool.map(merge, chosen)))
        # A merge from the oldest run holds the shard's whole content up to its last input: it names a board.
        outputs = {shard: Run(key(shard), table.num_rows, board_key(key(shard))
                              if chosen[shard][0] == 0 and _with_boards(job) else None)
                   for shard, table in merged.items()}
        replaced = [key for runs in inputs.values() for run in runs for key in run.keys]
        now = self.clock()
        objects = [o for shard in merged if merged[shard].num_rows
                   for o in self._run_objects(job, outputs[shard], merged[shard])]
        with ThreadPoolExecutor(max(1, min(self.parallelism, len(objects) + 1))) as pool:
            record = pool.submit(garbage.write_record, self.state, job.name, replaced, now, "compacted runs")
            list(pool.map(lambda o: self.state.put_if_absent(o[0], o[1]()), objects))
            record.result()
        for shard, table in merged.items():
            self._remember(outputs[shard].key, table)
        from_oldest = {shard for shard, (start, _) in chosen.items() if start == 0}
        for _ in range(5):
            shards = _replace_runs(manifest.shards, inputs, outputs, from_oldest)
            if shards is None:  # a rebuild, a rewrite or a re-partition replaced those runs meanwhile
                break
            compacted = replace(manifest, shards=shards, rows=sum(shard_rows(runs) for runs in shards))
            try:
                self.state.put_if_match(layout.manifest_key(job.name), compacted.encode(), etag, "application/json")
            except CommitConflict:
                manifest, etag = self.read_manifest(job)
                if manifest is None or manifest.other_definition:
                    break
                named = {run for runs in manifest.shards for run in runs}
                if any(run in named for run in outputs.values() if run.rows):
                    break  # our write applied; its response was lost and its retry met the 412
                continue
            self._forget(replaced)
            log.info("compacted runs", extra={"job": job.name, "shards": len(chosen), "runs": len(replaced),
                                              "rows": rows})
            return len(replaced)
        else:
            raise CommitConflict("the manifest kept moving while compacting")
        # Lost, or applied and since replaced: only a manifest read after the grace can tell, so the collector
        # decides, as for every run a commit stops naming.
        garbage.write_record(self.state, job.name, [key for run in outputs.values() if run.rows for key in run.keys],
                             self.clock(), "compacted runs not (or no longer) named")
        return 0

    def reduce_reported(self, job: Job) -> ReduceReport:
        """One run of one job, whose failure is in its report (a lost race is not a failure). Whatever became of
        the run, its report says how many markers it found and how old the oldest was: a job whose markers
        cannot be applied, or whose runs fail, shows as growing lag, not as silence."""
        inbox = None
        try:
            inbox = list(self.state.list(layout.inbox_prefix(job.name)))
            report = self.reduce_job(job, [o.key for o in inbox])
        except CommitConflict as exc:
            log.info("another reducer committed first", extra={"job": job.name, "detail": str(exc)})
            report = ReduceReport(job.name, conflict=True, more_pending=True)
        except StateMissing as exc:
            log.error("the committed state names an object that is gone", extra={"job": job.name, "key": exc.key})
            report = ReduceReport(job.name, errors=[f"StateMissing: {exc}"], missing=1)
        except Exception as exc:  # noqa: BLE001 - reported and re-raised by reduce_all
            log.exception("reduce failed", extra={"job": job.name})
            report = ReduceReport(job.name, errors=[f"{type(exc).__name__}: {exc}"])
        if inbox is not None:
            oldest = min((o.last_modified for o in inbox if o.last_modified is not None), default=None)
            report.pending, report.pending_since = len(inbox), oldest and oldest.isoformat()
        return report

    def gather(self, job: Job, listed: list[str] | None = None) -> Gathered:
        if listed is None:
            listed = self.list_inbox(job)
        # The manifest may be read after the listing: the ledger, not the order of reads, makes a marker that
        # another run applied meanwhile a no-op.
        manifest, etag = self.read_manifest(job)
        with self._missing_classified(job, etag):
            ledger = self.read_ledger(manifest)
        batch = _whole_contributions(listed, self.batch)
        with ThreadPoolExecutor(8) as pool:
            read = [m for m in pool.map(self._read_marker, batch) if m is not None]
            markers, incomplete = combine_ranges(read)
            markers, deferred = (markers, False) if job.is_scan else _within_groups(
                markers, self.max_groups, dict(zip(ledger["key"].to_pylist(), ledger["rows"].to_pylist())))
            quarantined = frozenset(ranges.contribution for ranges, record in zip(incomplete, pool.map(
                self.state.head, [layout.quarantine_key(job.name, r.contribution) for r in incomplete])) if record)
        # Read after the markers: S3's answer is then at least as new as every marker it is compared with.
        current = self.current_versions(sorted({m["key"] for m in markers if "key" in m} | {r.key for r in incomplete}))
        return Gathered(manifest, etag, ledger, markers, current, len(listed) > len(batch) or deferred,
                        tuple(incomplete), quarantined, tuple(read))

    def current_versions(self, keys: list[str]) -> dict[str, Current | None]:
        """What the input bucket holds now for each key (sorted). Objects that land together mostly sort
        together (a prefix and a counter or a timestamp), so listing the keys' range answers for up to 1,000
        keys a request where HEAD answers for one; a range that turns out sparse is finished with HEADs."""
        current: dict[str, Current | None] = {}
        covered = ""  # every key up to this one is answered by the listing
        if len(keys) >= LIST_MIN_KEYS:
            wanted, budget = set(keys), max(1, int(len(keys) * LISTED_PER_KEY))
            covered = keys[-1]
            listing = self.input.list(os.path.commonprefix(keys), start_after=keys[0][:-1],
                                      page_size=min(1000, budget + 1))
            for seen, obj in enumerate(listing):
                if obj.key > keys[-1]:
                    break
                if seen >= budget:
                    covered = previous
                    break
                if obj.key in wanted:
                    current[obj.key] = Current(obj.etag)
                previous = obj.key
            current.update({key: None for key in keys if key <= covered and key not in current})
        rest = [key for key in keys if key > covered]
        with ThreadPoolExecutor(8) as pool:
            for key, head in zip(rest, pool.map(self.input.head, rest)):
                current[key] = head and Current(head.etag, head.version_id)
        return current

    def list_inbox(self, job: Job) -> list[str]:
        return [o.key for o in self.state.list(layout.inbox_prefix(job.name))]

    def _read_marker(self, key: str) -> dict | None:
        try:
            marker = json.loads(self.state.get(key)[0])
            if marker.get("kind") in ("put", "removed") and marker.get("key") and marker.get("contribution") \
                    or marker.get("kind") == "repair" and isinstance(marker.get("lost"), list):
                return {**marker, "id": layout.id_of(key)}
        except ObjectMissing:
            return None  # processed by an overlapping run meanwhile
        except ValueError:
            pass
        log.warning("deleting a marker Tally did not write", extra={"marker": key})
        self.state.delete([key])
        return None

    def reduce_job(self, job: Job, listed: list[str] | None = None) -> ReduceReport:
        """`listed`: the inbox's keys, if the caller has just listed it."""
        listed = self.list_inbox(job) if listed is None else listed
        if not listed:
            return ReduceReport(job.name)  # an idle tick costs one LIST
        gathered = self.gather(job, listed)
        plan = gathered.plan()
        # More is pending only if this run got anywhere: a batch of range sets all still waiting would be
        # gathered again, unchanged, until their last ranges land.
        report = ReduceReport(job.name, generation=gathered.manifest.generation if gathered.manifest else None,
                              more_pending=gathered.more_pending and bool(plan.processed))
        try:
            if plan.changes_result:
                self.execute(job, gathered, plan, report)
            else:
                self._discard(job, gathered, plan)
        except UnusableParts as unusable:
            self._drop(job, gathered, unusable.markers)
            raise CommitConflict("markers with unusable parts were dropped; retrying without them") from None
        except StateMissing as missing:
            self._request_repair(job, gathered, missing)
            raise
        report.dropped = len(plan.processed) - report.merged
        return report

    def execute(self, job: Job, gathered: Gathered, plan: ChangePlan, report: ReduceReport) -> None:
        generation = (gathered.manifest.generation if gathered.manifest else 0) + 1
        keys = layout.generation_keys(job.name, generation)
        applied = self.apply(job, gathered, plan, generation, keys.pack)
        ledger = pa.Table.from_pylist(sorted(applied.entries.values(), key=lambda e: e["key"]), LEDGER_SCHEMA)
        superseded = [*applied.result.superseded(), gathered.manifest.ledger_key,
                      *gathered.manifest.other_definition] if gathered.manifest else []
        shards = applied.result.shards(keys.result, boards=_with_boards(job))
        live = garbage.Live.of((key for runs in shards for run in runs for key in run.keys), keys.ledger,
                               applied.entries.values())
        unneeded = (released(gathered.read, plan) | set(superseded)) - live.keys
        manifest = self._commit(job, gathered, keys, generation, applied.result, ledger, applied.pack, unneeded)
        self._forget(superseded)
        # Committed: the markers are in the ledger now. Clean-up only: a crash here is redone by the next run.
        self.state.delete([layout.inbox_key(job.name, marker) for marker in plan.processed])
        report.generation, report.rows = generation, manifest.rows
        report.merged, report.retracted, report.repaired = len(plan.add), len(plan.retract), len(plan.lost)
        report.landed = [t for t in (m.get("event_time") or m.get("mapped_at") for m in plan.add) if t]
        log.info("applied changes", extra={"job": job.name, "generation": generation, "added": len(plan.add),
                                           "retracted": len(plan.retract), "rows": manifest.rows})

    def _discard(self, job: Job, gathered: Gathered, plan: ChangePlan) -> None:
        """Nothing to commit: the processed markers were repeats or stale. Their attempts' parts go to a garbage
        record, not to DeleteObjects: an overlapping run that read them earlier may be about to make them live."""
        unneeded = released(gathered.read, plan) - garbage.Live.of((), "", gathered.entries.values()).keys
        garbage.write_record(self.state, job.name, unneeded, self.clock(), "stale or repeated mapping attempts")
        self.state.delete([layout.inbox_key(job.name, marker) for marker in plan.processed])

    def _drop(self, job: Job, gathered: Gathered, broken: list[dict]) -> None:
        # Parts missing, or written for another definition of the job: drop those markers; the reconcile maps a
        # still-current version again.
        log.warning("dropping markers with unusable parts",
                    extra={"job": job.name, "keys": [m["key"] for m in broken]})
        ids = {marker_id for m in broken for marker_id in marker_ids(m)}
        parts = {part for m in gathered.read if m["id"] in ids for part in m.get("parts", [])}
        live = garbage.Live.of((), "", gathered.entries.values())
        garbage.write_record(self.state, job.name, parts - live.keys, self.clock(), "unusable parts")
        self.state.delete([layout.inbox_key(job.name, marker_id) for marker_id in sorted(ids)])

    def _request_repair(self, job: Job, gathered: Gathered, missing: StateMissing) -> None:
        """A live version's partial is gone: ask the next run to drop it and rebuild the result from the others;
        the reconcile then maps the key's current version again. A lost result or ledger is not repaired here:
        `tally repair --reset` starts the result over."""
        lost = sorted({e["contribution"] for e in gathered.entries.values() if missing.key in e["parts"]})
        if not lost:
            return
        marker = layout.repair_marker()
        body = {"kind": "repair", "lost": lost, "missing": missing.key, "at": self.clock().isoformat()}
        self.state.put(layout.inbox_key(job.name, marker), json.dumps(body).encode(), "application/json")
        log.error("live partials are missing; the next run rebuilds the result without them",
                  extra={"job": job.name, "missing": missing.key, "contributions": lost})

    def apply(self, job: Job, gathered: Gathered, plan: ChangePlan, generation: int, pack_key: str) -> Applied:
        """The result and the live versions once `plan` is applied to the gathered state; writes nothing."""
        entries = gathered.entries
        for entry in (*plan.retract, *plan.lost):
            entries.pop(entry["key"], None)
        added_by_marker = self._read_added_parts(job, plan)
        added = [table for tables in added_by_marker for table in tables]
        inline = {m["contribution"]: tables[0] for m, tables in zip(plan.add, added_by_marker) if "inline" in m}
        for marker in plan.add:
            entries[marker["key"]] = _ledger_entry(marker, generation, pack_key)
        with self._missing_classified(job, gathered.manifest_etag):
            if job.is_scan:  # the result is the table of live output files; their rows are never read here
                base = self.read_result(job, gathered.manifest)
                gone = [entry["contribution"] for entry in (*plan.retract, *plan.lost)]
                files = scan.live_files(base, gone, plan.add)
                committed = gathered.manifest.shards if gathered.manifest else ()
                result = ShardedUpdate((files,), ((),), committed or ((),), scan.output_rows(files))
            else:
                result = self._update_shards(job, gathered.manifest, self._changes(job, plan, added, entries))
        return Applied(result, entries, _pack(inline) if inline else None)

    def _changes(self, job: Job, plan: ChangePlan, added: list[pa.Table], entries: dict[str, dict]) -> Changes:
        if not plan.retract and not plan.rebuilds:
            return Changes(added)
        if job.plan.subtractable and not plan.rebuilds:
            return Changes(added, self.read_retained(job, plan.retract))
        # min/max, sketches, or a lost partial: rebuild from every live version's retained partials; the shards a
        # lost partial reached are unknown, so a repair rebuilds them all.
        removed = [] if plan.rebuilds else self.read_retained(job, plan.retract)
        log.info("rebuilding result from retained partials", extra={"job": job.name, "objects": len(entries)})
        added_ids = {m["contribution"] for m in plan.add}
        kept = [e for e in entries.values() if e["contribution"] not in added_ids]
        return Changes(added, removed, (self.read_retained(job, batch)
                                        for batch in _batches_of_entries(kept, self.max_groups)),
                       everywhere=plan.rebuilds)

    def _update_shards(self, job: Job, manifest: Manifest | None, changes: Changes) -> ShardedUpdate:
        committed, rows = (manifest.shards, manifest.rows) if manifest else ((), 0)
        # An upper bound of the new result's groups: the added partials may share groups with it.
        count = shard_count(job.shards, len(committed), rows + sum(t.num_rows for t in changes.added),
                            self.shard_groups)
        return update_shards(job.plan, count, committed, lambda key: self._read_immutable(key, job.plan.fingerprint),
                             changes, self.parallelism, self.rewrite_groups)

    def preview(self, job: Job) -> tuple[Manifest | None, pa.Table]:
        """The committed result with the inbox applied, not committed: what the next run will serve, current
        to the last mapped object rather than the last reducer tick. Reads only."""
        listed = self.list_inbox(job)
        gathered = self.gather(job, listed) if listed else None
        if gathered is None:
            manifest, _ = self.read_manifest(job)
            return manifest, self.read_result(job, manifest)
        plan = gathered.plan()
        if not plan.changes_result:
            return gathered.manifest, self.read_result(job, gathered.manifest)
        try:
            added = self.apply(job, gathered, plan, 0, "")
        except UnusableParts:  # the next reducer run drops them; until then, serve what is committed
            return gathered.manifest, self.read_result(job, gathered.manifest)
        shards = [self.read_shard(job, kept) if table is None else
                  merge_runs(job.plan, [self.read_shard(job, kept), table], includes_oldest=True) if kept else table
                  for kept, table in zip(added.result.kept, added.result.tables)]
        shards = [table for table in shards if table.num_rows] or [self._empty_result(job)]
        return gathered.manifest, shards[0] if len(shards) == 1 else pa.concat_tables(shards)

    def read_retained(self, job: Job, entries: list[dict]) -> list[pa.Table]:
        """The partials of ledger entries: their own parts, or their rows of the packs they were kept in."""
        parts = [ref for entry in entries for ref in entry["parts"] if not layout.is_pack(ref)]
        in_pack: dict[str, set[str]] = {}
        for entry in entries:
            for ref in entry["parts"]:
                if layout.is_pack(ref):
                    in_pack.setdefault(ref, set()).add(entry["contribution"])

        def read_pack(ref: str) -> list[pa.Table]:
            pack = decode(self.state.get(ref)[0], job.plan.fingerprint)[0]
            wanted = pc.is_in(pack.column(_CONTRIBUTION), pa.array(sorted(in_pack[ref]), pa.string()))
            return _partials_of(pack.filter(wanted))

        with ThreadPoolExecutor(8) as pool:
            return [*self.read_parts(job, parts), *(t for tables in pool.map(read_pack, in_pack) for t in tables)]

    def _read_added_parts(self, job: Job, plan: ChangePlan) -> list[list[pa.Table]]:
        def read(marker: dict) -> list[pa.Table] | None:
            try:
                if job.is_scan:  # output files are served, not merged: they need only be there
                    return [] if all(self.state.head(key) for key in marker["parts"]) else None
                if "inline" in marker:
                    return [decode(base64.b64decode(marker["inline"]), job.plan.fingerprint)[0]]
                return [decode(self.state.get(key)[0], job.plan.fingerprint)[0] for key in marker["parts"]]
            except (ObjectMissing, PartialMismatch, binascii.Error):
                return None

        with ThreadPoolExecutor(8) as pool:
            read_parts = list(pool.map(read, plan.add))
        broken = [marker for marker, tables in zip(plan.add, read_parts) if tables is None]
        if broken:
            raise UnusableParts(broken)
        return read_parts

    def _commit(self, job: Job, gathered: Gathered, keys: layout.GenerationKeys, generation: int,
                result: ShardedUpdate, ledger: pa.Table, pack: pa.Table | None, unneeded: set[str]) -> Manifest:
        shards = result.shards(keys.result, boards=_with_boards(job))
        new_runs = {runs[-1].key: (runs[-1], table) for runs, table in zip(shards, result.tables)
                    if table is not None and table.num_rows}
        objects = [*(o for run, table in new_runs.values() for o in self._run_objects(job, run, table)),
                   (keys.ledger, lambda: encode(ledger, _LEDGER_FINGERPRINT))]
        if pack is not None:
            objects.append((keys.pack, lambda: encode(pack, job.plan.fingerprint)))
        written = [key for key, _ in objects]
        now = self.clock()
        with ThreadPoolExecutor(max(1, min(self.parallelism, len(objects) + 1))) as pool:  # encoding releases the GIL
            # The record of what this commit stops referencing is written before the commit can make it so.
            record = pool.submit(garbage.write_record, self.state, job.name, unneeded, now, f"commit {generation}")
            list(pool.map(lambda o: self.state.put_if_absent(o[0], o[1]()), objects))
            record = record.result()
        for key, table in [*((key, table) for key, (_, table) in new_runs.items()), (keys.ledger, ledger)]:
            self._remember(key, table)
        manifest = Manifest(generation, job.plan.fingerprint, shards, keys.ledger, now.isoformat(),
                            result.rows, ledger.num_rows, ledger_totals(ledger))
        try:
            if gathered.manifest_etag is None:
                self.state.put_if_absent(layout.manifest_key(job.name), manifest.encode(), "application/json")
            else:
                self.state.put_if_match(layout.manifest_key(job.name), manifest.encode(),
                                        gathered.manifest_etag, "application/json")
        except CommitConflict:
            if self._applied_after_all(job, manifest, [*written, record]):
                return manifest
            self._forget(written)
            raise
        return manifest

    @staticmethod
    def _run_objects(job: Job, run: Run, table: pa.Table) -> list[tuple[str, Callable[[], bytes]]]:
        """A new run's objects, each with what encodes it: the run in blocks (aggregation/runfile.py), which a
        page reads by range, and the leaderboard it names (engine/boards.py). A scan job's result, a table of
        files that is always read whole, stays one stream."""
        fingerprint = job.plan.fingerprint
        if job.is_scan:
            return [(run.key, lambda: encode(table, fingerprint))]
        objects = [(run.key, lambda: encode_run(table, fingerprint, job.plan.key_names))]
        if run.board:
            objects.append((run.board, lambda: boards.encode_board(job.plan, table)))
        return objects

    def _applied_after_all(self, job: Job, manifest: Manifest, own: list[str | None]) -> bool:
        """A conditional write that met a 412 may be our own write's retry: S3 applied the first attempt, its
        response was lost (a 500 or a timeout), and botocore tried again. Read the manifest back: it names our
        ledger, unique to this attempt, if and only if our write applied. If another run's manifest holds our
        generation, ours never applied and nothing can ever name our objects: they are deleted now. A later
        generation leaves it open (ours may have applied and been superseded at once): our objects are then
        left to the collector, which deletes them only when unreferenced."""
        current, _ = self.read_manifest(job, as_written=True)
        if current is not None and current.ledger_key == manifest.ledger_key:
            log.info("the manifest write applied though its response was lost", extra={"job": job.name})
            return True
        if current is not None and current.generation == manifest.generation:
            garbage.discard_own(self.state, filter(None, own))
        return False

    @contextmanager
    def _missing_classified(self, job: Job, etag: str | None):
        """An object the gathered manifest names is missing. Garbage is collected an hour after the commit that
        stopped naming it, so if the manifest has moved on this run is that stale: a lost race. If it has not,
        the committed state itself has lost the object."""
        try:
            yield
        except ObjectMissing as exc:
            _, now = self.read_manifest(job)
            if now != etag:
                raise CommitConflict(f"state moved on while reading it: {exc}") from exc
            raise StateMissing(job.name, exc.key) from exc


def _with_boards(job: Job) -> bool:
    """Whether a rewritten shard's run names a leaderboard: a job with an aggregate a page may be ordered by."""
    return not job.is_scan and bool(boards.orderable(job.plan))


def raise_failures(reports: Iterable[ReduceReport]) -> None:
    """Fails the invocation if a job failed, so Lambda records it, after its metrics are out."""
    failed = [f"{r.job}: {e}" for r in reports for e in r.errors]
    if failed:
        raise ReduceFailed("; ".join(failed))


def _replace_runs(shards: Shards, inputs: Mapping[int, tuple[Run, ...]], outputs: Mapping[int, Run],
                  from_oldest: set[int]) -> Shards | None:
    """`shards` with each shard's `inputs` (consecutive runs) replaced by its output run (none if empty); None if
    some input is no longer live there in that order, or no longer the oldest where the merge dropped the groups
    retracted to nothing (`from_oldest`)."""
    replaced = list(shards)
    for shard, runs in inputs.items():
        current = shards[shard] if shard < len(shards) else ()
        starts = [i for i in range(len(current) - len(runs) + 1) if current[i:i + len(runs)] == runs]
        if not starts or shard in from_oldest and starts[0] != 0:
            return None
        start = starts[0]
        output = (outputs[shard],) if outputs[shard].rows else ()
        replaced[shard] = (*current[:start], *output, *current[start + len(runs):])
    return tuple(replaced)


def _whole_contributions(listed: list[str], batch: int) -> list[str]:
    """About `batch` inbox keys, never cutting a version's markers apart (cut at the batch's end, a set of
    range markers would be cut the same way every run). Markers that can be applied come first: a version whose
    range markers are not all in, by the listing's own count, waits behind them, or a backlog of unfinished
    large objects at the head of the inbox would hold back every newer marker until its ranges landed."""
    groups: dict[str, list[str]] = {}
    for key in listed:
        groups.setdefault(layout.contribution_of_marker(layout.id_of(key)), []).append(key)
    taken: list[str] = []
    for keys in sorted(groups.values(), key=lambda keys: not _may_apply(keys)):  # stable: listing order kept
        if len(taken) >= batch:
            break
        taken += keys
    return taken


def _within_groups(markers: list[dict], budget: int, live_rows: Mapping[str, int | None]
                   ) -> tuple[list[dict], bool]:
    """The markers, in order, whose partials hold at most `budget` groups together (at least the first, however
    big), and whether any had to wait for a later run. A marker written before markers counted their groups
    counts its input rows, which bound them. A marker also weighs the live version of its key (`live_rows`:
    input rows by key, from the ledger), which applying it may retract: a retracted partial is read and merged
    too, so deleting a backlog of big objects must not fit in one run either."""
    def weight(marker: dict) -> int:
        added = marker.get("groups", marker.get("rows") or 0) if marker.get("kind") == "put" else 0
        return added + (live_rows.get(marker.get("key")) or 0)

    batches = _cut(markers, weight, budget)
    return (batches[0] if batches else []), len(batches) > 1


def _batches_of_entries(entries: list[dict], budget: int) -> list[list[dict]]:
    """Ledger entries in batches whose partials hold at most `budget` groups (by their input rows, which bound
    them). The entries kept in one pack go in one batch: each pack is read once."""
    units: dict[str, list[dict]] = {}
    for entry in entries:
        pack = next((ref for ref in entry["parts"] if layout.is_pack(ref)), None)
        units.setdefault(pack or entry["contribution"], []).append(entry)
    batches = _cut(list(units.values()), lambda unit: sum(entry.get("rows") or 0 for entry in unit), budget)
    return [[entry for unit in batch for entry in unit] for batch in batches]


def _cut(items: list, size: Callable[[Any], int], budget: int) -> list[list]:
    """`items` in order, in batches of at most `budget` by `size`; an item larger than that is a batch alone."""
    batches: list[list] = []
    total = 0
    for item in items:
        weight = size(item)
        if not batches or total + weight > budget:
            batches.append([])
            total = 0
        batches[-1].append(item)
        total += weight
    return batches


def _may_apply(keys: list[str]) -> bool:
    """Whether a version's inbox keys include a marker of the whole version or every range of a set."""
    sets: dict[int, set[int]] = {}
    for key in keys:
        ranged = layout.range_of_marker(layout.id_of(key))
        if ranged is None:
            return True
        sets.setdefault(ranged[1], set()).add(ranged[0])
    return any(len(indexes) == count for count, indexes in sets.items())


def _pack(inline: dict[str, pa.Table]) -> pa.Table:
    """One table of several contributions' partials, each row tagged with its contribution."""
    return pa.concat_tables([
        table.append_column(_CONTRIBUTION, pa.array([contribution] * table.num_rows, pa.string()))
        for contribution, table in sorted(inline.items())
    ])


def _partials_of(pack: pa.Table) -> list[pa.Table]:
    """A pack's rows as one partial per contribution, as each was committed."""
    contributions = pack.column(_CONTRIBUTION).combine_chunks()
    # _pack wrote each contribution's rows together, and a filter keeps their order.
    changes = pc.not_equal(contributions[1:], contributions[:-1]).to_numpy(zero_copy_only=False)
    bounds = [0, *(np.flatnonzero(changes) + 1).tolist(), pack.num_rows]
    rows = pack.drop_columns([_CONTRIBUTION])
    return [rows.slice(start, end - start) for start, end in zip(bounds, bounds[1:]) if end > start]


def _ledger_entry(marker: dict, generation: int, pack_key: str) -> dict:
    return {
        "contribution": marker["contribution"], "key": marker["key"], "etag": marker.get("etag"),
        "version_id": marker.get("version_id"), "sequencer": marker.get("sequencer"), "size": marker.get("size"),
        "rows": marker.get("rows"), "bad_rows": marker.get("bad_rows", 0), "mapped_at": marker.get("mapped_at"),
        "generation": generation, "parts": [pack_key] if "inline" in marker else marker["parts"],
        "bad_row_examples": marker.get("bad_row_examples") or [],
    }
