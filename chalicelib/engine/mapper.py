"""Map one input object version into one partial per matching job.

The object is streamed once per distinct input format (jobs over the same prefix and format share the parse),
each batch is lifted to per-group state, and the per-batch partials are merged as they accumulate so memory
follows the number of groups, not the object's size. The partial is written under a key derived from
(job, input key, version/ETag): a duplicated event rewrites the same object instead of counting twice.

A large text object is not mapped here but fanned out as byte ranges (see engine/fanout.py): `map_range` maps
one range the same way, into parts of its own and a range marker the reducer combines with the others.

A failure is the object's, never the job's or the run's. Each attempt at a version (or range) is counted in
the state bucket (engine/attempts.py): a job that fails `max_attempts` times on it is quarantined for it, and an
object over a budget (bytes of text, seconds of mapping) is quarantined at once. A job whose code raises does
not stop the other jobs of its group from committing the object, nor a failed record the other records.
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable

import pyarrow as pa

from ..aggregation import AggregationPlan
from ..aggregation.codec import Compression, encode
from ..errors import BadInput, CommitConflict, MappingFailed, ObjectMissing, OverBudget
from ..formats import (BLOCK_SIZE, MAX_BLOCK_SIZE, ParquetLayout, ReadStats, RowTooLong, ValueNotConvertible,
                       batches)
from ..formats.parquet import RangeReader
from ..formats.prefetch import AHEAD, CHUNK_BYTES, PrefetchingReader
from ..formats.ranges import LineRange, read_from
from ..jobs import Job, JobCatalog
from ..storage import Opened, ObjectStore
from . import fanout, layout
from .attempts import AttemptLog, Failures, describe
from .events import ObjectEvent, parse_records
from .scan import PART_BYTES, ScanWriter

log = logging.getLogger("tally.mapper")
# A whole object's partial up to this size travels inside its marker. For small objects the requests are the
# cost, not the bytes: this saves a PUT here and a GET in the reducer, which keeps such partials in packs.
INLINE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class MapOutcome:
    job: str
    key: str
    etag: str
    outcome: str  # mapped | fanned_out | quarantined | superseded | removed | failed | skipped
    rows: int = 0
    bytes_read: int = 0
    groups: int = 0  # rows of the partial (its groups; keys repeat if stated by row); a scan: output rows
    reason: str | None = None
    range: list[int] | None = None  # [index, count] when one range of a large object was mapped


# Pre-aggregating keys that are nearly all distinct (BDB 2b, 2c) hashes every row for nothing: the partial is no
# smaller, and the reducer merges it anyway. Each object decides from its first rows, as Spark and Trino decide
# whether partial aggregation pays.
SAMPLE_ROWS = 65_536
DISTINCT_ENOUGH = 0.95
# A partial is written once and read once, soon after, by the reducer: shuffle data, which trades size for speed
# (see aggregation/codec.py).
PARTIAL_COMPRESSION: Compression = "lz4"


class PartialAccumulator:
    """Folds input batches into one partial with bounded memory.

    Batches are buffered (they hold only the columns the jobs use) and lifted together once `max_groups` rows
    are waiting: one hash aggregation over many blocks, instead of one per 2 MB block and a second one to merge
    the blocks' partials, which on high-cardinality keys (BDB 2a-2c: 0.5-1 group per row) doubled the work.
    Lifted partials are merged when the unmerged part outgrows the merged one (amortized); once the merged
    partial holds `max_groups` groups it is handed to `spill` and accumulation starts over, so memory is
    bounded by the group budget even when nearly every row is its own group.

    If the first SAMPLE_ROWS rows have at least DISTINCT_ENOUGH groups a row, and the plan allows it, every row
    is stated on its own (`AggregationPlan.lift_rows`): the partial then repeats keys, which merging allows."""

    def __init__(self, plan: AggregationPlan, max_groups: int, spill: Callable[[pa.Table], None]):
        self.plan, self.max_groups, self.spill = plan, max_groups, spill
        self.merged = plan.empty()
        self.buffered: list[pa.RecordBatch] = []
        self.buffered_rows = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.by_row: bool | None = None if plan.lifts_rows else False  # None: not decided yet

    def add(self, batch: pa.RecordBatch) -> None:
        if self.by_row:
            self._add_rows(self.plan.lift_rows(pa.Table.from_batches([batch])))
            return
        self.buffered.append(batch)
        self.buffered_rows += batch.num_rows
        if self.by_row is None and self.buffered_rows >= min(SAMPLE_ROWS, self.max_groups):
            # Counting the sample's keys, not lifting it: pre-aggregated, the sample stays buffered and is lifted
            # with the rows after it, in one hash aggregation instead of two and a merge (2a: 20% faster).
            sample = pa.Table.from_batches(self.buffered)
            self.by_row = self.plan.count_groups(sample) >= DISTINCT_ENOUGH * self.buffered_rows
            if self.by_row:
                self.buffered, self.buffered_rows = [], 0
                self._add_rows(self.plan.lift_rows(sample))
        elif self.buffered_rows >= self.max_groups:
            self._lift()

    def result(self) -> pa.Table:
        if self.by_row:
            return pa.concat_tables([self.merged, *self.pending])
        self._lift()
        self._compact()
        return self.merged

    def _add_rows(self, partial: pa.Table) -> None:
        """Row-by-row states need no merging: they only wait to be spilled, in parts of at most max_groups."""
        held = self.merged.num_rows + self.pending_rows
        if held and held + partial.num_rows > self.max_groups:
            self.spill(pa.concat_tables([self.merged, *self.pending]))
            self.merged, self.pending, self.pending_rows = self.plan.empty(), [], 0
        self.pending.append(partial)
        self.pending_rows += partial.num_rows

    def _lift(self) -> int:
        """Lift the buffered rows; the groups that gives."""
        if not self.buffered:
            return 0
        partial = self.plan.lift(pa.Table.from_batches(self.buffered))
        self.buffered, self.buffered_rows = [], 0
        if not partial.num_rows:
            return 0
        self.pending.append(partial)
        self.pending_rows += partial.num_rows
        if self.pending_rows > max(self.merged.num_rows, min(1 << 16, self.max_groups // 2)):
            self._compact()
            # Between max_groups/2 and max_groups + a lift: spill now, before the next doubling.
            if self.merged.num_rows > self.max_groups // 2:
                self.spill(self.merged)
                self.merged = self.plan.empty()
        return partial.num_rows

    def _compact(self) -> None:
        if self.pending:
            self.merged = self.plan.merge([self.merged, *self.pending])
            self.pending, self.pending_rows = [], 0


class _PartWriter:
    """Writes one contribution's partial as numbered parts, under keys of this mapping attempt's own: a
    duplicated delivery, a retry or a restart never overwrites parts that another attempt's marker names."""

    def __init__(self, store: ObjectStore, job: Job, contribution: str, attempt: str, marker: str):
        self.store, self.job, self.contribution, self.attempt = store, job, contribution, attempt
        self.marker = marker  # a range's marker is its own; the contribution is the version's
        self.written: list[str] = []
        self.groups = 0  # rows of every part: what the reducer will hold when it reads them

    def write(self, partial: pa.Table, meta: dict) -> None:
        self.groups += partial.num_rows
        self._put(self._encode(partial, meta))

    def commit(self, partial: pa.Table, meta: dict, inline_limit: int) -> None:
        """The last part, then the marker: once the marker is in the inbox, every part it names is there.
        An object that fits in one small partial needs no part at all: the marker carries it."""
        data = self._encode(partial, meta)
        self.groups += partial.num_rows
        marker = {**meta, "kind": "put", "contribution": self.contribution, "groups": self.groups}
        if not self.written and len(data) <= inline_limit:
            marker["inline"] = base64.b64encode(data).decode()
        else:
            self._put(data)
        marker["parts"] = self.written
        self.store.put(layout.inbox_key(self.job.name, self.marker), json.dumps(marker).encode(),
                       "application/json")

    def _encode(self, partial: pa.Table, meta: dict) -> bytes:
        return encode(partial, self.job.plan.fingerprint, {**meta, "part": len(self.written)},
                      PARTIAL_COMPRESSION)

    def _put(self, data: bytes) -> None:
        key = layout.part_key(self.job.name, self.contribution, self.attempt, len(self.written))
        self.store.put(key, data)
        self.written.append(key)


class _GetLineRange(LineRange):
    """The lines a range owns, from a ranged GET to the object's end that it closes when done: reading stops a
    line past the range's end, mostly long before the GET's, whose connection must not wait for the rest."""

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


class _AggregateSink:
    """One aggregation job's partial of one object version: folded batch by batch, spilled in parts."""

    def __init__(self, writer: _PartWriter, max_groups: int, meta: dict, inline_limit: int):
        self.writer, self.inline_limit = writer, inline_limit
        self.accumulator = PartialAccumulator(writer.job.plan, max_groups, lambda part: writer.write(part, meta))

    @property
    def written(self) -> list[str]:
        return self.writer.written

    def add(self, batch: pa.RecordBatch) -> None:
        self.accumulator.add(batch)

    def commit(self, summary: dict) -> int:
        self.writer.commit(self.accumulator.result(), summary, self.inline_limit)
        return self.writer.groups


class _Isolated:
    """One job's sink, whose failure is that job's alone: the other jobs of the group go on reading the object
    and commit it. The job's own code (its map function, a user aggregate, checked arithmetic) runs in here."""

    def __init__(self, sink):
        self.sink = sink
        self.error: Exception | None = None
        self.committing = False  # a failure from here on may follow its marker: its parts are not deleted

    @property
    def written(self) -> list[str]:
        return self.sink.written

    def add(self, batch: pa.RecordBatch) -> None:
        if self.error is None:
            try:
                self.sink.add(batch)
            except Exception as error:  # noqa: BLE001 - recorded, reported, and retried or quarantined
                self.error = error

    def commit(self, summary: dict) -> int | None:
        if self.error is not None:
            return None
        self.committing = True
        try:
            return self.sink.commit(summary)
        except Exception as error:  # noqa: BLE001 - as in add
            self.error = error
            return None


class _GroupRun:
    """One attempt of a job group at an object version: its time budget, which spans the restarts of its read,
    and the jobs that failed in it."""

    def __init__(self, clock: Callable[[], datetime], max_seconds: float):
        self.clock, self.max_seconds, self.started = clock, max_seconds, clock()
        self.failed: dict[str, Exception] = {}

    def check_time(self) -> None:
        took = (self.clock() - self.started).total_seconds()
        if took > self.max_seconds:
            raise OverBudget(f"mapping took {took:,.0f} s and is not done, over the budget of "
                             f"{self.max_seconds:,.0f} s (raise TALLY_MAP_MAX_SECONDS to map it)")


class Mapper:
    def __init__(self, jobs: JobCatalog, input_store: ObjectStore, state_store: ObjectStore,
                 clock: Callable[[], datetime], max_groups: int = 500_000, block_size: int = BLOCK_SIZE,
                 inline_limit: int = INLINE_LIMIT, scan_part_bytes: int = PART_BYTES,
                 prefetch_chunk: int = CHUNK_BYTES, split_bytes: int | None = None,
                 dispatch: fanout.Dispatch | None = None, read_streams: int = AHEAD, max_attempts: int = 3,
                 max_seconds: float = 720.0, max_decompressed: int | None = None):
        self.jobs, self.input, self.state, self.clock = jobs, input_store, state_store, clock
        # Per object version (or range) and job: see engine/attempts.py and the TALLY_MAP_MAX_* settings.
        self.max_attempts, self.max_seconds, self.max_decompressed = max_attempts, max_seconds, max_decompressed
        self.max_groups, self.block_size, self.inline_limit = max_groups, block_size, inline_limit
        self.scan_part_bytes, self.prefetch_chunk, self.read_streams = scan_part_bytes, prefetch_chunk, read_streams
        # Objects above split_bytes go to `dispatch` as range tasks; without a dispatcher (tests, one-process
        # tools) the ranges are mapped here, one after the other: the same markers, no parallelism.
        self.split_bytes = split_bytes
        self.dispatch = dispatch or self._map_ranges_here

    @property
    def attempts(self) -> AttemptLog:
        return AttemptLog(self.state, self.max_attempts, timedelta(seconds=self.max_seconds))

    def handle(self, event: dict) -> list[MapOutcome]:
        """Every record of an S3 (or SQS-wrapped S3) event; the handler's whole job. A record that fails does
        not stop the others: once all are done the invocation fails, listing the failures, so Lambda delivers
        the event again (and a retry skips the jobs an attempt already mapped)."""
        outcomes, failures = [], []
        for record in parse_records(event):
            if record.bucket != self.input.bucket:
                continue
            try:
                outcomes += self.map_object(record) if record.created else self.note_removal(record)
            except Exception as error:  # noqa: BLE001 - raised below, after the other records
                log.error("mapping a record failed", exc_info=error, extra={"key": record.key, "etag": record.etag})
                failures.append(f"{record.key}: {describe(error)}")
        raise_failures(outcomes, failures)
        return outcomes

    def handle_range(self, payload: dict) -> list[MapOutcome]:
        """A range task's invocation: fails if a job failed on the range, so Lambda tries it again."""
        outcomes = self.map_range(fanout.RangeTask.from_dict(payload))
        raise_failures(outcomes)
        return outcomes

    def note_removal(self, event: ObjectEvent, jobs: list[Job] | None = None) -> list[MapOutcome]:
        """ObjectRemoved: tell each job's reducer to retract whatever version of the key it holds."""
        outcomes = []
        for job in self.jobs.for_key(event.key) if jobs is None else jobs:
            marker = layout.removal_marker(event.key, event.sequencer)
            body = {"kind": "removed", "contribution": marker, "key": event.key, "sequencer": event.sequencer,
                    "at": self.clock().isoformat()}
            self.state.put(layout.inbox_key(job.name, marker), json.dumps(body).encode(), "application/json")
            outcomes.append(MapOutcome(job.name, event.key, event.etag, "removed"))
        return outcomes

    def map_object(self, event: ObjectEvent) -> list[MapOutcome]:
        whole, ranged = [], []
        for job in self._jobs_for(event):
            (ranged if self._maps_in_ranges(job, event) else whole).append(job)
        outcomes = []
        if ranged:
            self.dispatch(fanout.range_tasks(event, event.etag, self.split_bytes))
            outcomes += [MapOutcome(job.name, event.key, event.etag, "fanned_out") for job in ranged]
        for group in _by_format(whole):
            outcomes += self._map_counted(event, group)
        return outcomes

    def map_range(self, task: fanout.RangeTask) -> list[MapOutcome]:
        """One range of a fanned-out object version, for every job that maps the object in ranges."""
        event = task.event
        # Not the size test: a task dispatched under another split setting is still mapped as it says.
        jobs = [job for job in self._jobs_for(event) if fanout.splits(job, task.key)]
        outcomes = []
        for group in _by_format(jobs):
            outcomes += self._map_counted(event, group, task)
        return outcomes

    def _jobs_for(self, event: ObjectEvent) -> list[Job]:
        """The jobs whose input the object is, or those of them the event names."""
        jobs = self.jobs.for_key(event.key)
        return [job for job in jobs if job.name in event.jobs] if event.jobs else jobs

    def _maps_in_ranges(self, job: Job, event: ObjectEvent) -> bool:
        return bool(self.split_bytes) and event.size > self.split_bytes and fanout.splits(job, event.key)

    def _map_ranges_here(self, tasks: list[fanout.RangeTask]) -> None:
        outcomes = []
        for task in tasks:
            outcomes += self.map_range(task)
        raise_failures(outcomes)  # as the range's own invocation would fail

    def _map_counted(self, event: ObjectEvent, jobs: list[Job], task: fanout.RangeTask | None = None
                     ) -> list[MapOutcome]:
        """Map a version (or range) for a job group as one attempt, counted (engine/attempts.py): jobs that an
        earlier attempt settled are skipped, jobs that failed too often are quarantined instead, and a job that
        fails now is recorded failed (and quarantined if that was its last attempt)."""
        if not event.etag:
            return self._map_group(event, jobs, task)  # no version to count against (S3 always sends one)
        contribution = layout.contribution_id(event.key, event.etag)
        in_range = None if task is None else (task.index, task.count)
        about = {"key": event.key, "etag": event.etag, "version_id": event.version_id,
                 "range": None if in_range is None else list(in_range)}
        # Counted per job definition: a job whose code changed starts afresh, and maps again what its old
        # code did.
        ids = {job.name: f"{job.name}@{job.plan.fingerprint}" for job in jobs}
        named = {ids[job.name]: job for job in jobs}
        attempts = self.attempts
        attempt = attempts.start(layout.attempt_subject(contribution, in_range), list(named), about, self.clock())
        outcomes = [MapOutcome(named[i].name, event.key, event.etag, "skipped", reason=f"{how} by an earlier attempt")
                    for i, how in attempt.settled_before.items()]
        outcomes += [self._quarantine_failing(named[i], event, contribution, failures, task)
                     for i, failures in attempt.exhausted.items()]
        failed: dict[str, Exception] = {}
        if attempt.jobs:
            group, run = [named[i] for i in attempt.jobs], _GroupRun(self.clock, self.max_seconds)
            try:
                outcomes += self._map_group(event, group, task, run)
            except Exception as error:  # noqa: BLE001 - the group's read failed: every job's attempt did
                log.error("mapping failed", exc_info=error, extra={"key": event.key, "etag": event.etag})
                run.failed.update({job.name: error for job in group})
                outcomes += [MapOutcome(job.name, event.key, event.etag, "failed", reason=describe(error))
                             for job in group]
            failed = {ids[name]: error for name, error in run.failed.items()}
        exhausted = attempts.judge(attempt, failed)
        outcomes = [self._quarantine_failing(named[ids[o.job]], event, contribution, exhausted[ids[o.job]], task)
                    if o.outcome == "failed" and ids[o.job] in exhausted else o for o in outcomes]
        attempts.finish(attempt, failed, exhausted, self.clock())
        return outcomes

    def _quarantine_failing(self, job: Job, event: ObjectEvent, contribution: str, failures: Failures,
                            task: fanout.RangeTask | None) -> MapOutcome:
        self._quarantine(job, event, event.etag, contribution, BadInput(failures.reason), task, failures.attempts)
        return MapOutcome(job.name, event.key, event.etag, "quarantined", reason=failures.reason)

    def _map_group(self, event: ObjectEvent, jobs: list[Job], task: fanout.RangeTask | None = None,
                   run: _GroupRun | None = None) -> list[MapOutcome]:
        run = run if run is not None else _GroupRun(self.clock, self.max_seconds)
        block_size, tolerant = self.block_size, False
        # A range is read from the byte before it to the object's end; LineRange stops a line past its end.
        byte_range = None if task is None else (read_from(task.start), task.size)
        while True:
            try:
                opened = self.input.open(event.key, if_match=None if event.version_id else event.etag or None,
                                         version_id=event.version_id, byte_range=byte_range)
            except (ObjectMissing, CommitConflict):
                # Deleted or overwritten since the event: the newer object's own event maps it.
                log.info("object superseded before mapping", extra={"key": event.key, "etag": event.etag})
                return [MapOutcome(job.name, event.key, event.etag, "superseded") for job in jobs]
            try:
                return self._map_stream(event, jobs, opened, block_size, task, run, tolerant)
            except RowTooLong:
                if block_size >= MAX_BLOCK_SIZE:
                    raise
                # Arrow needs a whole row inside one block: read again with blocks big enough for it.
                block_size = min(block_size * 16, MAX_BLOCK_SIZE)
                log.info("row longer than the block; mapping again", extra={"key": event.key, "block": block_size})
            except ValueNotConvertible:
                if tolerant:
                    raise  # the tolerant read never raises it: never loop
                # The typed reader stopped at a value it cannot convert and cannot go on: read again from the
                # start, skipping (or, under on_bad_row="fail", reporting) such rows. The sinks start over too.
                tolerant = True
                log.info("a value does not convert; mapping again", extra={"key": event.key})

    def _map_stream(self, event: ObjectEvent, jobs: list[Job], opened: Opened, block_size: int,
                    task: fanout.RangeTask | None, run: _GroupRun, tolerant: bool = False) -> list[MapOutcome]:
        etag = event.etag or opened.etag
        # Named by its ETag, as the reconcile's listing and the reducer's HEAD name it, even in a versioned
        # bucket: the version id only pins the reads.
        contribution = layout.contribution_id(event.key, etag)
        attempt = layout.new_attempt()
        # A range's reader numbers lines from the range's first: its reports say which range.
        stats = ReadStats(origin=None if task is None else f"range {task.index + 1} of {task.count}")
        meta = {"key": event.key, "etag": etag, "version_id": event.version_id, "sequencer": event.sequencer,
                "size": opened.size, "event_time": event.event_time}
        marker = layout.version_marker(contribution, attempt)
        used = frozenset().union(*(job.plan.columns for job in jobs))
        reader = replace(jobs[0].format.reader(), include=tuple(n for n in jobs[0].format.columns if n in used))
        if task is not None:
            # A header is the first line of the object, so only range 0 has one to skip.
            meta.update(size=task.size, range=[task.index, task.count])
            marker = layout.range_marker(contribution, task.index, task.count, attempt)
            reader = replace(reader, header=reader.header and task.index == 0)
        sinks = {job.name: _Isolated(self._sink(job, contribution, attempt, meta, marker, task is None))
                 for job in jobs}
        try:
            with self._source(event, opened, reader, task) as source:
                read = batches(source, reader, event.key, stats, block_size, tolerant, self.max_decompressed)
                try:
                    for batch in read:
                        for sink in sinks.values():
                            sink.add(batch)
                        run.check_time()
                        if all(sink.error for sink in sinks.values()):
                            break  # no job is left to read the rest for
                finally:
                    read.close()
                stats.bytes_read = getattr(source, "bytes_fetched", stats.bytes_read)
            # Judged per object: a range of nothing but malformed rows may sit in a good object, so a range's
            # malformed rows are only counted (a range's parse errors still quarantine the version).
            if stats.rows == 0 and stats.bad_rows and task is None:
                raise BadInput(f"no row could be parsed ({stats.bad_rows} malformed rows): "
                               + "; ".join(stats.bad_row_examples))
        except (BadInput, ObjectMissing, CommitConflict) as error:
            for sink in sinks.values():
                # Parts spilled before the error: this attempt's own, and no marker names them.
                self.state.delete(sink.written)
            if isinstance(error, ValueNotConvertible) or isinstance(error, RowTooLong) and block_size < MAX_BLOCK_SIZE:
                raise  # _map_group reads again
            if not isinstance(error, BadInput):
                # A ranged read found the version gone or replaced: the newer object's own event maps it.
                return [MapOutcome(job.name, event.key, etag, "superseded") for job in jobs]
            for job in jobs:
                self._quarantine(job, event, etag, contribution, error, task)
            return [MapOutcome(job.name, event.key, etag, "quarantined", reason=str(error)) for job in jobs]

        outcomes = []
        summary = {**meta, "bytes_read": stats.bytes_read, "rows": stats.rows, "bad_rows": stats.bad_rows,
                   "bad_row_examples": stats.bad_row_examples, "mapped_at": self.clock().isoformat()}
        for job in jobs:
            sink = sinks[job.name]
            produced = sink.commit(summary)
            if sink.error is None:
                outcomes.append(MapOutcome(job.name, event.key, etag, "mapped", stats.rows, stats.bytes_read,
                                           produced, range=meta.get("range")))
            else:
                outcomes.append(self._job_failed(job, event, etag, contribution, sink, task, run))
        return outcomes

    def _job_failed(self, job: Job, event: ObjectEvent, etag: str, contribution: str, sink: _Isolated,
                    task: fanout.RangeTask | None, run: _GroupRun) -> MapOutcome:
        if not sink.committing:
            # Its parts are this attempt's own, and no marker names them. After its commit began, the marker
            # may have been written (a lost response): its parts are left to the garbage collector.
            self.state.delete(sink.written)
        if isinstance(sink.error, BadInput):  # the job's own reading of the object: as final as the object's
            self._quarantine(job, event, etag, contribution, sink.error, task)
            return MapOutcome(job.name, event.key, etag, "quarantined", reason=str(sink.error))
        log.error("a job failed on an object", exc_info=sink.error,
                  extra={"job": job.name, "key": event.key, "etag": etag})
        run.failed[job.name] = sink.error
        return MapOutcome(job.name, event.key, etag, "failed", reason=describe(sink.error))

    def _sink(self, job: Job, contribution: str, attempt: str, meta: dict, marker: str, whole: bool):
        if job.is_scan:
            return ScanWriter(self.state, job, contribution, attempt, marker, self.scan_part_bytes)
        # A range's partial always goes in parts: its marker waits for its siblings', and the reducer's packs
        # keep one partial per contribution, not one per range.
        inline_limit = self.inline_limit if whole else -1
        return _AggregateSink(_PartWriter(self.state, job, contribution, attempt, marker), self.max_groups, meta,
                              inline_limit)

    def _source(self, event: ObjectEvent, opened: Opened, reader, task: fanout.RangeTask | None = None):
        """The object as the format needs it, every read pinned to the version we opened, so an overwrite while
        we read is a 412 (superseded), never a mix of two versions' bytes. Text: the GET's stream, or for a big
        object several ranged GETs in flight (one stream is slower than the kernel); for a range of a large
        object, the lines it owns, read the same way from its start on (reading stops a line past its end;
        closing cancels what was fetched beyond). Parquet (read from the footer on): a seekable file of ranged
        GETs."""
        pin = {"version_id": event.version_id} if event.version_id else {"if_match": opened.etag}

        def fetch(start: int, end: int) -> bytes:
            ranged = self.input.open(event.key, byte_range=(start, end), **pin)
            with ranged.body as body:
                return body.read()

        if task is not None:
            begin = read_from(task.start)
            if self._prefetches(task.end - begin):
                return _GetLineRange(PrefetchingReader(fetch, begin, task.size, first=opened.body,
                                                       chunk=self.prefetch_chunk, ahead=self.read_streams),
                                     task.start, task.end)
            return _GetLineRange(opened.body, task.start, task.end)
        if isinstance(reader, ParquetLayout):
            opened.body.close()  # the first GET told us the size and the ETag; Parquet starts at the end
            return RangeReader(fetch, opened.size)
        if self._prefetches(opened.size):
            return PrefetchingReader(fetch, 0, opened.size, first=opened.body, chunk=self.prefetch_chunk,
                                     ahead=self.read_streams)
        return opened.body

    def _prefetches(self, length: int) -> bool:
        return self.read_streams > 1 and length > 2 * self.prefetch_chunk

    def _quarantine(self, job: Job, event: ObjectEvent, etag: str, contribution: str, error: BadInput,
                    task: fanout.RangeTask | None = None, attempts: int = 1) -> None:
        record = {
            "key": event.key, "etag": etag, "version_id": event.version_id, "reason": error.reason,
            "line": error.line, "offset": error.offset, "attempts": attempts, "at": self.clock().isoformat(),
        }
        if task is not None:
            # A range counts lines and bytes from its own first line: the line number is not the object's, the
            # offset is, to within one line (the range's start).
            record.update(line=None, offset=None if error.offset is None else task.start + error.offset,
                          range=[task.index, task.count])
        log.warning("input quarantined", extra={"job": job.name, **record})
        self.state.put(layout.quarantine_key(job.name, contribution), json.dumps(record).encode(),
                       content_type="application/json")


def _by_format(jobs: list[Job]) -> Iterable[list[Job]]:
    """Jobs grouped by input format: each group shares one parse of the object."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.format.model_dump_json(), []).append(job)
    return groups.values()


def raise_failures(outcomes: list[MapOutcome], failures: Iterable[str] = ()) -> None:
    """Fail the invocation, after everything else was mapped, if a record or a job failed: Lambda then delivers
    it again (the jobs that succeeded are skipped), and their attempts count towards quarantine."""
    failures = [*failures, *(f"{o.key} ({o.job}): {o.reason}" for o in outcomes if o.outcome == "failed")]
    if failures:
        raise MappingFailed(failures, outcomes)


def outcomes_as_dicts(outcomes: Iterable[MapOutcome]) -> list[dict]:
    return [asdict(o) for o in outcomes]
