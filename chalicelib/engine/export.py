"""Exports: a job's current result as one Parquet or CSV file in the state bucket, handed out as a presigned URL.

An export is a finalized snapshot of one generation, the rows `/results` serves in its default order (keys
ascending; a scan job's rows in input key, file, row order), key columns then values. Its key names the job,
the generation, the definition and the format (`layout.export_key`), so it is written once: whoever asks first
writes it with put-if-absent (a concurrent request writing the same bytes meets 412: already there), everyone
after finds it with one HEAD and no read of the result.

Older generations' exports go under the deletion discipline (docs/deletion.md): a user may still hold a URL to
one. The request that writes generation N lists the exports and names every older one in a garbage record;
the collector deletes them once the record is older than its grace. A request that wrote an export of a
generation the manifest has already left names its own too (a writer of the newer one may have listed before
it wrote). A URL for an export named at time r was issued by a request that read the manifest before r, so it
expires before r + URL_LIFETIME + REQUEST_LIMIT; the grace must be longer (checked when built).

Pure of AWS: an ObjectStore, the reducer's and result reader's reads, and a clock.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..csvtext import csv_cell
from ..errors import CommitConflict, InvalidQuery, InvalidSettings, ObjectMissing
from ..jobs import Job
from ..scan import decode_rows
from ..storage import ObjectStore
from . import garbage, layout
from .reducer import Manifest, Reducer
from .results import ResultReader

FORMATS = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8"}
PARAMETERS = frozenset({"format"})  # what the route accepts (tests/test_openapi.py)
URL_LIFETIME = dt.timedelta(minutes=15)
# The longest a request may run between reading the manifest and presigning: the API Lambda's timeout (30 s,
# .chalice/config.json), with room. Local mode's threads have no such limit but the same default grace (60 min).
REQUEST_LIMIT = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Export:
    url: str
    generation: int | None  # None: nothing committed yet (an empty export), as /results says
    rows: int
    format: str
    expires_at: dt.datetime
    key: str
    written: bool  # this request wrote it (False: found, or another request's write won)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "generation": self.generation, "rows": self.rows, "format": self.format,
                "expires_at": self.expires_at.isoformat()}


def parse_format(params: Mapping[str, str] | None) -> str:
    params = dict(params or {})
    unknown = set(params) - PARAMETERS
    if unknown:
        raise InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    fmt = params.get("format", "parquet")
    if fmt not in FORMATS:
        raise InvalidQuery(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return fmt


class Exporter:
    def __init__(self, state: ObjectStore, reducer: Reducer, results: ResultReader,
                 clock: Callable[[], dt.datetime], garbage_grace: dt.timedelta = garbage.GRACE,
                 url_lifetime: dt.timedelta = URL_LIFETIME):
        if url_lifetime + REQUEST_LIMIT >= garbage_grace:
            raise InvalidSettings(f"export URLs live {url_lifetime}: the garbage grace ({garbage_grace}) must be "
                                  f"longer than that plus {REQUEST_LIMIT}, or an export could go before its URL")
        self.state, self.reducer, self.results, self.clock = state, reducer, results, clock
        self.url_lifetime = url_lifetime

    def export(self, job: Job, fmt: str) -> Export:
        manifest, _ = self.reducer.read_manifest(job)
        key = _key(job, manifest, fmt)
        written = False
        if self.state.head(key) is None:
            manifest, table = self._snapshot(job)
            key = _key(job, manifest, fmt)  # the snapshot's own: a commit may have come since the HEAD
            written = self._write(key, encode(table, fmt), fmt)
            if written:
                self._retire_older(job, manifest, key)
            rows = table.num_rows
        else:
            rows = manifest.rows if manifest else 0
        generation = manifest.generation if manifest else None
        url = self.state.presigned_get(key, self.url_lifetime, f"{job.name}-{generation or 0}.{fmt}")
        return Export(url, generation, rows, fmt, self.clock() + self.url_lifetime, key, written)

    def _snapshot(self, job: Job) -> tuple[Manifest | None, pa.Table]:
        """A manifest and the finalized rows of the result it names, in /results' default order."""
        if not job.is_scan:
            manifest, table = self.results.current(job)
            order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in job.plan.key_names])
            return manifest, table.take(order)
        for attempt in range(3):
            manifest, _ = self.reducer.read_manifest(job)
            files = self.reducer.read_result(job, manifest).column("file").to_pylist()
            try:
                with ThreadPoolExecutor(max(1, min(8, len(files)))) as pool:
                    tables = list(pool.map(lambda file: self._read_rows(job, file), files))
            except ObjectMissing:  # a commit retracted a file between our reads: read the new file set
                if attempt == 2:
                    raise
                continue
            empty = job.result_schema.empty_table()
            return manifest, pa.concat_tables([empty, *tables]) if tables else empty
        raise AssertionError("unreachable")

    def _read_rows(self, job: Job, file: str) -> pa.Table:
        return decode_rows(self.state.get(file)[0], job.plan.fingerprint).cast(job.result_schema)

    def _write(self, key: str, data: bytes, fmt: str) -> bool:
        try:
            self.state.put_if_absent(key, data, FORMATS[fmt])
        except CommitConflict:  # a concurrent request wrote it first: the same snapshot, so the same rows
            return False
        return True

    def _retire_older(self, job: Job, manifest: Manifest | None, key: str) -> None:
        """Names the exports of older generations for the collector: listed after our write, so an older one
        written concurrently is either listed here, or its writer reads a manifest at least this new and names
        its own."""
        generation = _generation(manifest)
        listed = ((o.key, layout.export_generation(o.key)) for o in self.state.list(layout.exports_prefix(job.name)))
        older = [other for other, of in listed if of is not None and of < generation]
        current, _ = self.reducer.read_manifest(job)
        if _generation(current) > generation:
            older.append(key)
        garbage.write_record(self.state, job.name, older, self.clock(), "superseded exports", exports=True)


def _generation(manifest: Manifest | None) -> int:
    return manifest.generation if manifest else 0


def _key(job: Job, manifest: Manifest | None, fmt: str) -> str:
    return layout.export_key(job.name, _generation(manifest), job.plan.fingerprint, fmt)


# -- encoding ---------------------------------------------------------------------------------------------

def encode(table: pa.Table, fmt: str) -> bytes:
    """The same table always gives the same bytes, so concurrent writers of one generation agree."""
    sink = io.BytesIO()
    if fmt == "parquet":
        # Snappy: the codec every reader has (Athena included); types are kept as they are, decimals included.
        pq.write_table(table.replace_schema_metadata(None), sink, compression="snappy")
        return sink.getvalue()
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.column_names)
    for batch in table.to_batches(max_chunksize=64 * 1024):
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        writer.writerows(zip(*(map(csv_cell, column) for column in columns)))
    text.flush()
    return sink.getvalue()
