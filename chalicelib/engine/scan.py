"""Map-only (scan) jobs on the exactly-once machinery: output files per object version, a live set per commit.

The mapper writes one input object version's output rows as Parquet files under that version's contribution
(`jobs/<job>/parts/<contribution>/<split>-<n>.parquet`, each at most ~`PART_BYTES` of Arrow data, so memory
stays bounded however many rows pass the filter), then its marker, which names the files and their row
counts. Output files are never carried inline in markers nor packed together: a file holds exactly one
version's rows, so the live set is a set of whole files and a retracted version's rows vanish with its files.

The reducer runs the same plan as for aggregations (`changes.plan_changes`: add, retract, stale) against the
same ledger, but never reads the rows: a scan job's committed "result" is the table of live output files
(`FILES_SCHEMA`), computed from the previous one and the markers. The manifest names it, so a reader that
starts from the manifest sees every live version's rows exactly once and no retracted or stale version's.
Files of retracted and stale versions are deleted after the commit, as parts are.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from ..jobs import Job
from ..scan import encode_rows
from ..storage import ObjectStore
from . import layout

PART_BYTES = 32 << 20  # Arrow bytes of output rows held before they are written as one file

FILES_SCHEMA = pa.schema([
    ("file", pa.string()), ("contribution", pa.string()), ("key", pa.string()), ("etag", pa.string()),
    ("rows", pa.int64()), ("bytes", pa.int64()),
])


class ScanWriter:
    """One job's output for one object version: batches in, Parquet files out, then the marker."""

    def __init__(self, store: ObjectStore, job: Job, contribution: str, attempt: str, marker: str,
                 part_bytes: int = PART_BYTES):
        # Files are named by the mapping attempt: a marker's files are all its own attempt's.
        self.store, self.job, self.contribution, self.attempt = store, job, contribution, attempt
        self.part_bytes = part_bytes
        self.marker = marker  # a range's marker is its own (see engine/fanout.py)
        self.written: list[str] = []
        self.outputs: list[dict] = []
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        rows = self.job.plan.apply(batch)
        if rows.num_rows:
            self._pending.append(rows)
            self._pending_bytes += rows.nbytes
            if self._pending_bytes >= self.part_bytes:
                self._flush()

    def commit(self, summary: dict) -> int:
        """The last file, then the marker: once the marker is in the inbox, every file it names is there.
        Returns the number of output rows."""
        self._flush()
        marker = {**summary, "kind": "put", "contribution": self.contribution, "parts": self.written,
                  "outputs": self.outputs, "output_rows": sum(o["rows"] for o in self.outputs)}
        self.store.put(layout.inbox_key(self.job.name, self.marker), json.dumps(marker).encode(),
                       "application/json")
        return marker["output_rows"]

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_bytes = [], 0
        data = encode_rows(table, self.job.plan.fingerprint)
        key = layout.part_key(self.job.name, self.contribution, self.attempt, len(self.written), "parquet")
        self.store.put(key, data, "application/vnd.apache.parquet")
        self.written.append(key)
        self.outputs.append({"file": key, "rows": table.num_rows, "bytes": len(data)})


def live_files(files: pa.Table, retracted: Iterable[str], added: Iterable[Mapping]) -> pa.Table:
    """The live output files after a commit: those of `files` whose contribution is not retracted, and those
    of the `added` markers. Sorted by input key and file, the order results are paged in."""
    gone = pa.array(sorted(set(retracted)), pa.string())
    kept = files.filter(pc.invert(pc.is_in(files.column("contribution"), gone))) if len(gone) else files
    new = [{"file": o["file"], "contribution": m["contribution"], "key": m["key"], "etag": m.get("etag"),
            "rows": o["rows"], "bytes": o["bytes"]} for m in added for o in m.get("outputs", [])]
    table = pa.concat_tables([kept, pa.Table.from_pylist(new, FILES_SCHEMA)])
    return table.sort_by([("key", "ascending"), ("file", "ascending")])


def output_rows(files: pa.Table) -> int:
    return int(pc.sum(files.column("rows")).as_py() or 0) if files.num_rows else 0
