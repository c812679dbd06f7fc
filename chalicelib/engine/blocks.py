"""Reading result runs by block (aggregation/runfile.py): their indexes and blocks, fetched by ranged GET and
kept while they are the newest read, within a byte bound.

Runs and boards are immutable under their keys, so what is cached is never stale; the bound, not the result's
size, is what the API's memory holds. A run written before blocks (one IPC stream) is read whole once and
seen as a run of one block.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import pyarrow as pa

from ..aggregation import runfile
from ..aggregation.runfile import Block, RunIndex, decode_any, decode_block, parse_tail
from ..storage import ObjectStore

CACHE_BYTES = 96 << 20  # decoded blocks, indexes and boards a warm API container keeps


@dataclass(frozen=True)
class RunView:
    key: str
    blocks: tuple[Block, ...]
    plain_keys: bool
    whole: pa.Table | None = None  # a run in the old format: its one block, already read


class BlockReader:
    def __init__(self, store: ObjectStore, key_names: list[str], fingerprint: str, cache: "ByteCache"):
        self.store, self.key_names, self.fingerprint, self.cache = store, key_names, fingerprint, cache
        self.requests = 0  # GETs made, for tests and logs
        self.bytes = 0

    def view(self, key: str) -> RunView:
        cached = self.cache.get(("view", key))
        if cached is not None:
            return cached
        tail, size = self.store.get_tail(key, runfile.TAIL_BYTES)
        self._count(tail)
        index = parse_tail(tail, size, self.fingerprint)
        if isinstance(index, int):  # an index longer than the tail read: fetch it exactly
            tail = self.store.get_range(key, size - index, size)
            self._count(tail)
            index = parse_tail(tail, size, self.fingerprint)
        if isinstance(index, RunIndex):
            view = RunView(key, index.blocks, index.plain_keys)
            self.cache.put(("view", key), view, index.nbytes)
            return view
        data = tail if len(tail) == size else self._get(key)  # the old format: read it whole
        table = decode_any(data, self.fingerprint)
        keys = table.select(self.key_names)
        first, last = (tuple(keys.slice(i, 1).to_pylist()[0].values()) for i in (0, max(0, table.num_rows - 1)))
        plain = all(not keys.column(n).null_count for n in self.key_names) and not any(
            pa.types.is_floating(keys.schema.field(n).type) for n in self.key_names)
        view = RunView(key, (Block(0, size, table.num_rows, first, last),), plain, table)
        self.cache.put(("view", key), view, table.nbytes)
        return view

    def block(self, view: RunView, i: int) -> pa.Table:
        if view.whole is not None:
            return view.whole
        cached = self.cache.get(("block", view.key, i))
        if cached is None:
            block = view.blocks[i]
            data = self.store.get_range(view.key, block.start, block.end)
            self._count(data)
            cached = decode_block(data, self.fingerprint)
            self.cache.put(("block", view.key, i), cached, cached.nbytes)
        return cached

    def whole(self, view: RunView) -> pa.Table:
        if view.whole is not None:
            return view.whole
        tables = [self.block(view, i) for i in range(len(view.blocks))]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def small(self, key: str, decode) -> object:
        """A small immutable object (a board), decoded by `decode(bytes)`, cached."""
        cached = self.cache.get(("small", key))
        if cached is None:
            cached = decode(self._get(key))
            self.cache.put(("small", key), cached, sum(getattr(part, "nbytes", 0) for part in cached) + 1024)
        return cached

    def _get(self, key: str) -> bytes:
        data = self.store.get(key)[0]
        self._count(data)
        return data

    def _count(self, data: bytes) -> None:
        self.requests += 1
        self.bytes += len(data)


class ByteCache:
    """Least recently used first out, by the bytes each entry holds."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.limit, self.held = limit, 0
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value, size: int) -> None:
        if size > self.limit:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (value, size)
            self.held += size
            while self.held > self.limit:
                self.held -= self._entries.popitem(last=False)[1][1]

    def discard(self, keys) -> None:
        with self._lock:
            for key in keys:
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self.held -= entry[1]
