"""Serving the current result: pages ordered by a key or an aggregate, a prefix filter, single groups.

A result of more than `whole_rows` groups is paged by engine/pages.py, which reads per shard only the blocks
of its runs a page needs (by key), or its leaderboard and newer runs (by an aggregate): a page costs what it
returns, not what exists, and its `total_rows` is the manifest's count (an upper bound while shards have
several runs, before `having` and filters). A smaller one, a `fresh` page (the inbox applied: read whole) and a
page in an order no index follows (by a key column other than the key's own order) are served from a decoded,
finalized and sorted copy of the whole result, cached per result (its runs' keys) until the manifest names a
newer one, with an exact `total_rows`. A single group is read from the one shard that holds it. Paging is
keyset-based: the cursor holds the sort position of the last row served, so a page boundary stays put while
the reducer keeps committing.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import CommitConflict, GroupNotFound, InvalidQuery, ObjectMissing
from ..jobs import Job
from . import pages
from .blocks import CACHE_BYTES, BlockReader, ByteCache
from .reducer import Manifest, Reducer, key_row, shard_id
from .runs import merge_runs

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# Up to this many groups a result is read whole and cached (a few MB): exact totals, and no round trips.
WHOLE_ROWS = 1 << 17


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    generation: int | None
    total_rows: int


@dataclass(frozen=True)
class ResultsQuery:
    limit: int = DEFAULT_LIMIT
    order_by: str | None = None
    desc: bool = False
    prefix: str | None = None
    cursor: str | None = None
    # Include partials mapped but not yet merged: current to the last mapped object, at the cost of reading
    # the inbox on every request (uncached).
    fresh: bool = False
    window_from: Any = None  # inclusive, on window_start
    window_to: Any = None  # exclusive

    @classmethod
    def from_params(cls, job: Job, params: dict[str, str] | None) -> "ResultsQuery":
        params = dict(params or {})
        # The accepted parameters are this class's fields, which /openapi.json must list (tests/test_openapi.py).
        unknown = set(params) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        limit = parse_limit(params)
        order_by = params.get("order_by")
        names = job.plan.key_names + list(job.aggregates)
        if order_by is not None and order_by not in names:
            raise InvalidQuery(f"order_by must be one of {names}, got {order_by!r}")
        if order_by is not None and pa.types.is_nested(job.plan.result_schema.field(order_by).type):
            raise InvalidQuery(f"{order_by!r} is a list of values, which has no order; order by another column")
        prefix = params.get("prefix")
        if prefix is not None and _prefix_column(job) is None:
            raise InvalidQuery("prefix= needs a job whose first key is a string")
        window_from, window_to = (_window_bound(job, params.get(name), name) for name in ("window_from", "window_to"))
        return cls(limit, order_by, parse_flag(params, "desc"), prefix, params.get("cursor"),
                   parse_flag(params, "fresh"), window_from, window_to)


def parse_limit(params: dict[str, str]) -> int:
    """The page size asked for, capped at MAX_LIMIT."""
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise InvalidQuery(f"limit must be an integer, got {params['limit']!r}") from None
    if limit < 1:
        raise InvalidQuery("limit must be at least 1")
    return min(limit, MAX_LIMIT)


def group_query_fresh(params: dict[str, str] | None) -> bool:
    """The single-group route takes one parameter: `fresh`."""
    unknown = set(params or {}) - {"fresh"}
    if unknown:
        raise InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return parse_flag(params, "fresh")


def parse_flag(params: dict[str, str] | None, name: str) -> bool:
    value = (params or {}).get(name, "false").lower()
    if value not in {"true", "false", "1", "0"}:
        raise InvalidQuery(f"{name} must be true or false, got {params[name]!r}")
    return value in {"true", "1"}


def _window_bound(job: Job, text: str | None, name: str) -> Any:
    """An ISO date or timestamp, typed like the job's window_start key."""
    if text is None:
        return None
    if job.windowed_by is None:
        raise InvalidQuery(f"{name}= needs a job with a window; {job.name!r} has none")
    kind = job.plan.state_schema.field(job.windowed_by).type
    try:
        return pa.scalar(text).cast(kind).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InvalidQuery(f"{name} must be an ISO {'date' if pa.types.is_date(kind) else 'timestamp'} "
                           f"(e.g. 2001-02-03), got {text!r}") from None


def _prefix_column(job: Job) -> str | None:
    first = job.plan.state_schema.field(0)
    return first.name if pa.types.is_string(first.type) or pa.types.is_large_string(first.type) else None


class ResultReader:
    def __init__(self, reducer: Reducer, cache_size: int = 8, whole_rows: int = WHOLE_ROWS,
                 cache_bytes: int = CACHE_BYTES):
        self.reducer, self.whole_rows = reducer, whole_rows
        self._blocks = ByteCache(cache_bytes)  # run indexes, blocks and boards: immutable, bounded by bytes
        self._finalized: OrderedDict[str, pa.Table] = OrderedDict()
        self._sorted: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the local HTTP server is threaded

    def current(self, job: Job, fresh: bool = False) -> tuple[Manifest | None, pa.Table]:
        """The served result, finalized (`fresh`: with the inbox applied). Retries if a commit replaced the
        result between two reads."""
        if fresh:
            for attempt in range(3):
                try:
                    manifest, table = self.reducer.preview(job)
                    return manifest, job.plan.finalize(table)
                except (ObjectMissing, CommitConflict):
                    if attempt == 2:
                        raise
        for attempt in range(3):
            manifest, _ = self.reducer.read_manifest(job)
            if manifest is None or not any(manifest.shards):
                return manifest, job.plan.finalize(job.plan.empty())
            try:
                return manifest, self._finalized_copy(job, manifest.result_id,
                                                      lambda: self.reducer.read_result(job, manifest))
            except ObjectMissing:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def page(self, job: Job, query: ResultsQuery) -> Page:
        if not query.fresh and not job.is_scan:
            manifest, _ = self.reducer.read_manifest(job)
            if manifest is not None and manifest.rows > self.whole_rows:
                page = self._ranged_page(job, query, manifest)
                if page is not None:
                    return page
        return self._whole_page(job, query)

    def blocks(self, job: Job) -> BlockReader:
        return BlockReader(self.reducer.state, job.plan.key_names, job.plan.fingerprint, self._blocks)

    def _ranged_page(self, job: Job, query: ResultsQuery, manifest: Manifest) -> Page | None:
        """A page read by range (engine/pages.py); None where only the whole read gives its order."""
        sort_keys = _sort_keys(job, query)
        by_key = query.order_by is None or sort_keys in (
            [(name, "ascending") for name in job.plan.key_names], [(name, "descending") for name in job.plan.key_names])
        after = _decode_cursor(query.cursor, sort_keys, query) if query.cursor else None
        if after is not None and any(v is None or isinstance(v, float) and math.isnan(v) for v in after):
            return None  # the whole read orders nulls and NaN as Arrow does
        if query.order_by in job.plan.key_names and not (by_key and job.plan.key_names[0] == query.order_by):
            return None  # by another key column first: no index follows that order
        desc = sort_keys[0][1] == "descending"
        for attempt in range(3):
            try:
                rows, more = pages.read_page(
                    self.blocks(job), job.plan, manifest.shards, sort_keys, None if by_key else query.order_by,
                    desc, after, query.prefix, lambda table: _filtered(job, query, table),
                    lambda table: _position_after(table, sort_keys, after) if after is not None else 0, query.limit)
                break
            except ObjectMissing:  # a commit replaced a run and the collector took it: read the new manifest
                if attempt == 2:
                    raise
                manifest, _ = self.reducer.read_manifest(job)
        listed = rows.to_pylist()
        next_cursor = _encode_cursor([listed[-1][name] for name, _ in sort_keys], query) if more and listed else None
        return Page([_row(job, r) for r in listed], next_cursor, manifest.generation, manifest.rows)

    def _whole_page(self, job: Job, query: ResultsQuery) -> Page:
        manifest, table = self.current(job, query.fresh)
        generation = manifest.generation if manifest else None
        sort_keys = _sort_keys(job, query)
        cache_key = (manifest.result_id if manifest else job.name, tuple(sort_keys))
        with self._lock:
            ordered = None if query.fresh else self._sorted.get(cache_key)
        if ordered is None:
            ordered = table.take(pc.sort_indices(table, sort_keys=sort_keys))
            if not query.fresh:
                self._remember(self._sorted, cache_key, ordered)
        ordered = _filtered(job, query, ordered)
        start = 0
        if query.cursor:
            start = _position_after(ordered, sort_keys, _decode_cursor(query.cursor, sort_keys, query))
        rows = ordered.slice(start, query.limit).to_pylist()
        end = start + len(rows)
        next_cursor = None
        if end < ordered.num_rows and rows:
            next_cursor = _encode_cursor([rows[-1][name] for name, _ in sort_keys], query)
        return Page([_row(job, r) for r in rows], next_cursor, generation, ordered.num_rows)

    def group(self, job: Job, key_text: str, fresh: bool = False) -> dict[str, Any]:
        if job.is_scan:
            raise InvalidQuery(f"{job.name} is a scan job: it has output rows, not groups; "
                               f"page them at /jobs/{job.name}/results")
        values = _parse_group_key(job, key_text)
        table = self.current(job, fresh)[1] if fresh else self._shard_holding(job, values)
        mask = None
        for name, value in zip(job.plan.key_names, values):
            column = table.column(name)
            test = pc.is_null(column) if value is None else pc.equal(column, pa.scalar(value, column.type))
            mask = test if mask is None else pc.and_(mask, test)
        found = table.filter(mask).to_pylist()
        if not found:
            raise GroupNotFound(job.name, key_text)
        return _row(job, found[0])

    def _shard_holding(self, job: Job, values: list[Any]) -> pa.Table:
        """The finalized rows of the committed result that may hold the group: past `whole_rows`, those of the
        blocks that can hold its key in each run of its shard; below, its shard (read once, cached)."""
        for attempt in range(3):
            manifest, _ = self.reducer.read_manifest(job)
            key = dict(zip(job.plan.key_names, values))
            runs = self.reducer.shard_holding(job, manifest, key)
            if not runs:
                return job.plan.finalize(job.plan.empty())
            try:
                if manifest.rows > self.whole_rows:  # only the blocks whose key range can hold the group
                    rows = pages.point_reads(self.blocks(job), job.plan, runs, key_row(job, key))
                    return job.plan.finalize(merge_runs(job.plan, rows, includes_oldest=True))
                return self._finalized_copy(job, shard_id(runs), lambda: self.reducer.read_shard(job, runs))
            except ObjectMissing:  # a commit replaced that shard between our two reads
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _finalized_copy(self, job: Job, result_id: str, read) -> pa.Table:
        """A result's (or one shard's) finalized table, cached: what it is read from never changes."""
        with self._lock:
            cached = self._finalized.get(result_id)
        if cached is None:
            cached = job.plan.finalize(read())
            self._remember(self._finalized, result_id, cached)
        return cached

    def _remember(self, cache: OrderedDict, key, value) -> None:
        with self._lock:
            cache[key] = value
            while len(cache) > self._cache_size:
                cache.popitem(last=False)


def _filtered(job: Job, query: ResultsQuery, table: pa.Table) -> pa.Table:
    """The finalized rows `query`'s prefix and window keep."""
    if query.prefix is not None:
        table = table.filter(pc.starts_with(table.column(_prefix_column(job)), pattern=query.prefix))
    if query.window_from is not None:
        table = table.filter(pc.greater_equal(table.column(job.windowed_by), pa.scalar(query.window_from)))
    if query.window_to is not None:
        table = table.filter(pc.less(table.column(job.windowed_by), pa.scalar(query.window_to)))
    return table


def _row(job: Job, row: dict[str, Any]) -> dict[str, Any]:
    return {"key": {k: row[k] for k in job.plan.key_names}, "values": {a: row[a] for a in job.aggregates}}


def _sort_keys(job: Job, query: ResultsQuery) -> list[tuple[str, str]]:
    keys = [(name, "ascending") for name in job.plan.key_names]
    if query.order_by is None:
        return [(name, "descending" if query.desc else "ascending") for name, _ in keys]
    direction = "descending" if query.desc else "ascending"
    return [(query.order_by, direction)] + [k for k in keys if k[0] != query.order_by]


# -- cursors ----------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dt.datetime):
        return {"$ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        (tag, text), = value.items()
        return {"$dec": Decimal, "$ts": dt.datetime.fromisoformat, "$date": dt.date.fromisoformat,
                "$float": float}[tag](text)
    return value


def _encode_cursor(after: list[Any], query: ResultsQuery) -> str:
    body = {"after": [_plain(v) for v in after], "order_by": query.order_by, "desc": query.desc,
            "prefix": query.prefix, "window": [_plain(query.window_from), _plain(query.window_to)]}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort_keys, query: ResultsQuery) -> list[Any]:
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = [_typed(v) for v in body["after"]]
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidOperation):
        raise InvalidQuery("cursor is not one this API issued") from None
    window = [_plain(query.window_from), _plain(query.window_to)]
    if (body.get("order_by"), body.get("desc"), body.get("prefix"), body.get("window")) != (
            query.order_by, query.desc, query.prefix, window):
        raise InvalidQuery("cursor belongs to a query with other order_by/desc/prefix/window parameters")
    if len(after) != len(sort_keys):
        raise InvalidQuery("cursor is not one this API issued")
    return after


def _compare(a: Any, b: Any, direction: str) -> int:
    """Arrow's order: nulls last in either direction, NaN after every number."""
    if a is None or b is None:
        return 0 if a is b else (1 if a is None else -1)
    a_nan, b_nan = isinstance(a, float) and math.isnan(a), isinstance(b, float) and math.isnan(b)
    if a_nan or b_nan:
        return 0 if a_nan and b_nan else (1 if a_nan else -1)
    result = (a > b) - (a < b)
    return -result if direction == "descending" else result


def _position_after(table: pa.Table, sort_keys, after: list[Any]) -> int:
    """Index of the first row strictly after `after` in sort order (binary search: log n row reads)."""
    low, high = 0, table.num_rows
    while low < high:
        middle = (low + high) // 2
        row = table.slice(middle, 1).to_pylist()[0]
        comparison = 0
        for (name, direction), value in zip(sort_keys, after):
            try:
                comparison = _compare(row[name], value, direction)
            except TypeError:
                raise InvalidQuery("cursor is not one this API issued") from None
            if comparison:
                break
        if comparison <= 0:
            low = middle + 1
        else:
            high = middle
    return low


def _parse_group_key(job: Job, text: str) -> list[Any]:
    fields = [job.plan.state_schema.field(name) for name in job.plan.key_names]
    if len(fields) == 1:
        raw = [text]
    else:
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        if not isinstance(raw, list) or len(raw) != len(fields):
            raise InvalidQuery(f"job {job.name!r} has {len(fields)} keys: give them as a JSON array, "
                               f"e.g. {json.dumps(['...'] * len(fields))}")
    values = []
    for f, value in zip(fields, raw):
        if value is None or pa.types.is_string(f.type):
            values.append(value)
            continue
        try:
            values.append(pa.scalar(str(value)).cast(f.type).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InvalidQuery(f"key {f.name!r} is {f.type}; {value!r} is not") from None
    return values
