"""A result run as blocks a reader can fetch one at a time: what lets a page read what it returns.

A run is a shard's groups sorted by key (engine/runs.py). Written as one Arrow IPC stream, any read of it is a
whole GET and a whole decode, so a first page of a 64 M-group result cost every run of every shard. Here a run
is cut into blocks of BLOCK_ROWS rows, each an encoded partial of its own (codec.encode: format version and plan
fingerprint, so a block of another job definition is refused as a partial is), followed by an index naming
each block's byte range, row count and first and last key, the way an SSTable's footer does (Hummock, SlateDB):

    MAGIC | block 0 | block 1 | ... | index (codec.encode of one row per block) | index length (8 bytes LE) | MAGIC

A reader fetches the tail (TAIL_BYTES, which holds the index of any run up to thousands of blocks), then only
the blocks whose key range it needs, by ranged GET. Runs written before this format (a bare IPC stream) start
with other bytes: `decode_any` reads both whole, and `parse_tail` answers None for them, so readers fall back
to a whole read. Pure: bytes in, tables out.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from ..errors import PartialMismatch
from .codec import decode, encode

MAGIC = b"tally.run.v1\n"
# 16 Ki rows: a first page reads one block per run (a few hundred KB for 2c), while the index of a 4 M-group
# shard stays at 256 entries. Smaller blocks would cut the bytes a page reads and grow the index and the GETs.
BLOCK_ROWS = 1 << 14
TAIL_BYTES = 64 << 10
_LENGTH = struct.Struct("<Q")
_TRAILER = _LENGTH.size + len(MAGIC)


@dataclass(frozen=True)
class Block:
    start: int   # byte offset in the run
    end: int     # exclusive
    rows: int
    first: tuple  # the first and last key of the block, as Python values, in the key columns' order
    last: tuple


@dataclass(frozen=True)
class RunIndex:
    blocks: tuple[Block, ...]
    # No key column holds a null or a NaN: the run's order is then plain tuple order, in either direction
    # (Arrow puts nulls and NaN last both ways, so a run holding them is not a reversible order).
    plain_keys: bool

    @property
    def nbytes(self) -> int:
        return 200 * (1 + len(self.blocks))  # about what the Python objects take: bounds the reader's cache


def encode_run(table: pa.Table, fingerprint: str, key_names: Sequence[str], block_rows: int | None = None) -> bytes:
    """`table` (sorted by `key_names`) as a run of blocks."""
    block_rows = block_rows or BLOCK_ROWS
    parts, offset, rows = [MAGIC], len(MAGIC), []
    for start in range(0, table.num_rows, block_rows):
        block = table.slice(start, block_rows)
        data = encode(block, fingerprint)
        keys = block.select(list(key_names))
        rows.append({"start": offset, "end": offset + len(data), "rows": block.num_rows,
                     "first": keys.slice(0, 1).to_pylist()[0], "last": keys.slice(block.num_rows - 1).to_pylist()[0]})
        parts.append(data)
        offset += len(data)
    key_type = pa.struct([table.schema.field(name) for name in key_names])
    index = pa.table({
        "start": pa.array([r["start"] for r in rows], pa.int64()),
        "end": pa.array([r["end"] for r in rows], pa.int64()),
        "rows": pa.array([r["rows"] for r in rows], pa.int64()),
        "first": pa.array([r["first"] for r in rows], key_type),
        "last": pa.array([r["last"] for r in rows], key_type),
    })
    index_data = encode(index, fingerprint, {"plain_keys": _plain_keys(table, key_names), "kind": "run-index"})
    parts += [index_data, _LENGTH.pack(len(index_data)), MAGIC]
    return b"".join(parts)


def is_run(head: bytes) -> bool:
    return head.startswith(MAGIC)


def parse_tail(tail: bytes, size: int, fingerprint: str) -> RunIndex | int | None:
    """The index from the last bytes of a run of `size` bytes; the number of tail bytes needed if `tail` is too
    short; None if the object is not in this format (an older run: read it whole)."""
    if len(tail) < _TRAILER or not tail.endswith(MAGIC):
        return None
    (length,) = _LENGTH.unpack(tail[-_TRAILER:-len(MAGIC)])
    if length + _TRAILER > len(tail):
        return length + _TRAILER if length + _TRAILER <= size else None
    index, meta = decode(tail[-_TRAILER - length:-_TRAILER], fingerprint)
    if meta.get("kind") != "run-index":
        raise PartialMismatch("the run's trailer names no block index")
    blocks = tuple(Block(start, end, rows, tuple(first.values()), tuple(last.values()))
                   for start, end, rows, first, last in zip(*(index.column(n).to_pylist() for n in index.column_names)))
    return RunIndex(blocks, bool(meta.get("plain_keys")))


def decode_block(data: bytes, fingerprint: str) -> pa.Table:
    return decode(data, fingerprint)[0]


def decode_any(data: bytes, fingerprint: str) -> pa.Table:
    """A whole run in either format (or any other encoded table: ledgers, runs written before blocks)."""
    if not is_run(data):
        return decode(data, fingerprint)[0]
    index = parse_tail(data, len(data), fingerprint)
    if not isinstance(index, RunIndex):
        raise PartialMismatch("a run whose trailer is cut short")
    tables = [decode_block(data[b.start:b.end], fingerprint) for b in index.blocks]
    if not tables:
        raise PartialMismatch("an empty run: no block to read its schema from")
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


def _plain_keys(table: pa.Table, key_names: Sequence[str]) -> bool:
    for name in key_names:
        column = table.column(name)
        if column.null_count:
            return False
        if pa.types.is_floating(column.type) and any(
                math.isnan(v) for v in column.to_pylist() if v is not None):  # float keys are rare: a plain scan
            return False
    return True


def key_of(row: dict[str, Any], key_names: Sequence[str]) -> tuple:
    return tuple(row[name] for name in key_names)
