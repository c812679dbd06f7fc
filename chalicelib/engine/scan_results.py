"""Serving a scan job's output: its rows page by page, or its live output files with their row counts.

Both read from the committed file table the manifest names, so a page never holds a retracted version's rows
or a row twice. Rows are served in (input key, file, row) order; the cursor is that position, a keyset like
the aggregation results' cursors: when the reducer commits between two pages, the next page continues after
the same position in the new file set (files before it were served, files after it are current). With
`fresh`, the file table is the committed one with the inbox applied (output files are written before their
markers), so rows are current to the last mapped object; nothing is written.
"""
from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import InvalidQuery, ObjectMissing
from ..jobs import Job
from ..scan import decode_rows
from .scan import output_rows
from .reducer import Reducer
from .results import DEFAULT_LIMIT, parse_flag, parse_limit


@dataclass(frozen=True)
class ScanQuery:
    limit: int = DEFAULT_LIMIT
    view: str = "rows"  # rows | files
    cursor: tuple[str, str, int] | None = None  # (input key, file, rows of that file already served)
    fresh: bool = False  # with the output of objects mapped since the last reducer run

    @classmethod
    def from_params(cls, params: dict[str, str] | None) -> "ScanQuery":
        params = dict(params or {})
        unknown = set(params) - {"limit", "cursor", "view", "fresh"}
        if unknown:
            raise InvalidQuery(f"unknown parameter(s) for a scan job: {', '.join(sorted(unknown))} "
                               "(it takes limit, cursor, view=rows|files and fresh)")
        limit = parse_limit(params)
        view = params.get("view", "rows")
        if view not in {"rows", "files"}:
            raise InvalidQuery(f"view must be rows or files, got {view!r}")
        cursor = _decode_cursor(params["cursor"], view) if params.get("cursor") else None
        return cls(limit, view, cursor, parse_flag(params, "fresh"))


class ScanReader:
    def __init__(self, reducer: Reducer, cache_size: int = 4):
        self.reducer = reducer
        self._cache: OrderedDict[str, pa.Table] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def page(self, job: Job, query: ScanQuery) -> dict[str, Any]:
        for attempt in range(3):
            if query.fresh:  # the committed file table with the inbox applied: output files are written first
                manifest, table = self.reducer.preview(job)
            else:
                manifest, _ = self.reducer.read_manifest(job)
                table = self.reducer.read_result(job, manifest)
            files = table.to_pylist()
            try:
                rows, cursor = (self._files if query.view == "files" else self._rows)(job, files, query)
            except ObjectMissing:  # a commit retracted a file between our reads: read the new file set
                if attempt == 2:
                    raise
                continue
            return {"job": job.name, "generation": manifest.generation if manifest else None,
                    "total_rows": output_rows(table), "files": len(files), query.view: rows,
                    "next_cursor": cursor and _encode_cursor(cursor, query.view)}
        raise AssertionError("unreachable")

    def _files(self, job: Job, files: list[dict], query: ScanQuery):
        start = _first_at_or_after(files, query.cursor)
        if query.cursor and start < len(files) and (files[start]["key"], files[start]["file"]) == query.cursor[:2]:
            start += 1  # a files cursor names the last file served
        page = files[start:start + query.limit]
        more = start + len(page) < len(files)
        listed = [{k: f[k] for k in ("file", "key", "etag", "rows", "bytes")} for f in page]
        return listed, (page[-1]["key"], page[-1]["file"], 0) if more and page else None

    def _rows(self, job: Job, files: list[dict], query: ScanQuery):
        rows: list[dict] = []
        index = _first_at_or_after(files, query.cursor)
        skip = query.cursor[2] if query.cursor and index < len(files) and (
            files[index]["key"], files[index]["file"]) == query.cursor[:2] else 0
        while index < len(files) and len(rows) < query.limit:
            entry = files[index]
            table = self._read(job, entry["file"])
            taken = table.slice(skip, query.limit - len(rows)).to_pylist()
            rows += taken
            skip += len(taken)
            if skip >= table.num_rows:
                index, skip = index + 1, 0
        if index >= len(files):
            return rows, None
        return rows, (files[index]["key"], files[index]["file"], skip)

    def _read(self, job: Job, file: str) -> pa.Table:
        with self._lock:
            cached = self._cache.get(file)
        if cached is None:
            # Files are immutable (named by contribution and split): a cached copy never goes stale.
            cached = decode_rows(self.reducer.state.get(file)[0], job.plan.fingerprint)
            with self._lock:
                self._cache[file] = cached
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return cached


def _first_at_or_after(files: list[dict], cursor: tuple[str, str, int] | None) -> int:
    if cursor is None:
        return 0
    position = cursor[:2]
    return next((i for i, f in enumerate(files) if (f["key"], f["file"]) >= position), len(files))


def _encode_cursor(cursor: tuple[str, str, int], view: str) -> str:
    body = json.dumps({"view": view, "at": list(cursor)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def _decode_cursor(text: str, view: str) -> tuple[str, str, int]:
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        key, file, offset = body["at"]
        if not (isinstance(key, str) and isinstance(file, str) and isinstance(offset, int) and offset >= 0):
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidQuery("cursor is not one this API issued") from None
    if body.get("view") != view:
        raise InvalidQuery("cursor belongs to another view")
    return key, file, offset
