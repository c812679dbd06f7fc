"""Which shard a group belongs to: a stable hash of its key columns, vectorized with numpy.

Shard ids are stored (each shard is its own result object), so the hash must give the same answer in every
process and every release: no Python `hash()`, fixed constants, little-endian reads. Changing it re-partitions
every sharded result; `tests/test_partition.py` pins known values so that cannot happen by accident.

pyarrow 20 has no hash kernel. Strings and binaries are hashed from their data buffer 8 bytes at a time (one
unaligned little-endian read per word, masked to the value's length), fixed-width values from their bits; every
column's hash goes through splitmix64's finalizer, and several key columns are chained. Two values Arrow groups
together must share a shard, so floats are canonicalized first (-0.0 to 0.0, one NaN).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BLOCK = 1 << 16
_NULL = np.uint64(0x6A09E667F3BCC909)  # a null key's hash, whatever its column type


def shard_of(table: pa.Table | pa.RecordBatch, key_names: list[str], shards: int) -> np.ndarray:
    """The shard (0..shards-1) of every row, as an int64 array."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    if shards == 1:
        return np.zeros(table.num_rows, dtype=np.int64)
    hashed = hash_column(table.column(key_names[0]))
    for name in key_names[1:]:
        with np.errstate(over="ignore"):
            hashed = _mix(hashed * _GOLDEN + hash_column(table.column(name)))
    return (hashed % np.uint64(shards)).astype(np.int64)


def split_by_shard(table: pa.Table, key_names: list[str], shards: int) -> list[pa.Table]:
    """`table`'s rows in one table per shard (each keeps the rows' relative order)."""
    if shards == 1:
        return [table]
    ids = shard_of(table, key_names, shards)
    order = np.argsort(ids.astype(np.uint8 if shards <= 256 else np.uint16), kind="stable")  # a radix sort
    bounds = np.searchsorted(ids[order], np.arange(shards + 1))
    grouped = table.take(pa.array(order))
    return [grouped.slice(bounds[s], bounds[s + 1] - bounds[s]) for s in range(shards)]


def hash_column(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash per value of one column (nulls hash to a constant)."""
    if isinstance(column, pa.ChunkedArray):
        chunks = [hash_column(chunk) for chunk in column.chunks]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
    if len(column) > _BLOCK:  # blocks whose working arrays stay in cache: about twice as fast as one pass
        return np.concatenate([hash_column(column.slice(i, _BLOCK)) for i in range(0, len(column), _BLOCK)])
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type) or pa.types.is_binary(column.type) or \
            pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type):
        hashed = _hash_binary(column)
    elif pa.types.is_boolean(column.type):
        hashed = _mix(pc.fill_null(column, False).cast(pa.uint8()).to_numpy().astype(np.uint64))
    elif pa.types.is_floating(column.type):
        hashed = _hash_words(_canonical_float_bits(column))
    elif column.type.bit_width and column.type.bit_width % 8 == 0:
        hashed = _hash_words(_fixed_width_words(column))
    else:  # rare key types (lists, structs): their text form is as stable as the values
        return hash_column(pc.cast(column, pa.string()))
    if column.null_count:
        hashed[pc.is_null(column).to_numpy(zero_copy_only=False)] = _NULL
    return hashed


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 (its increment, then its finalizer): every input bit flips about half the output bits.
    In place on a fresh array: each pass over memory counts at tens of millions of keys a second."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + _GOLDEN
        shifted = x >> np.uint64(30)
        x ^= shifted
        x *= np.uint64(0xBF58476D1CE4E5B9)
        np.right_shift(x, np.uint64(27), out=shifted)
        x ^= shifted
        x *= np.uint64(0x94D049BB133111EB)
        np.right_shift(x, np.uint64(31), out=shifted)
        x ^= shifted
    return x


def _hash_words(words: np.ndarray) -> np.ndarray:
    """Rows of uint64 words (n x k) to one hash per row."""
    hashed = _mix(words[:, 0])
    with np.errstate(over="ignore"):
        for k in range(1, words.shape[1]):
            hashed = _mix(hashed * _GOLDEN + words[:, k])
    return hashed


def _fixed_width_words(column: pa.Array) -> np.ndarray:
    """The value bits of a fixed-width column (ints, dates, timestamps, decimals) as n x k uint64 words."""
    width = column.type.bit_width // 8
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8)[column.offset * width:(column.offset + len(column)) * width]
    if width >= 8:
        return raw.view("<u8").reshape(len(column), width // 8)
    return raw.view(f"<u{width}").astype(np.uint64).reshape(len(column), 1)


def _canonical_float_bits(column: pa.Array) -> np.ndarray:
    values = pc.fill_null(column, 0.0).cast(pa.float64()).to_numpy()
    values = np.where(np.isnan(values), np.nan, values + 0.0)  # -0.0 + 0.0 is 0.0
    return values.view("<u8").reshape(len(column), 1)


# Odd multipliers, one per word position (a value's k-th 8 bytes), cycling after 64 words (512 bytes).
_WORD_WEIGHTS = _mix(np.arange(64, dtype=np.uint64)) | np.uint64(1)
_LAST_WORD_MASKS = np.array([0] + [(1 << (8 * n)) - 1 for n in range(1, 8)] + [2 ** 64 - 1], dtype=np.uint64)


def _hash_binary(column: pa.Array) -> np.ndarray:
    """A weighted sum of each value's bytes read as little-endian 8-byte words (the last one masked to the
    value's length) and of its length, through the mixer. A sum, not a chain: a word past a value's end is
    zero and adds nothing, so all values advance together one word position at a time (vector passes)
    and a value's hash does not depend on the other values in its batch."""
    wide = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    offsets = np.frombuffer(column.buffers()[1], dtype="<i8" if wide else "<i4")
    offsets = offsets[column.offset:column.offset + len(column) + 1].astype(np.int64)
    first, end = (int(offsets[0]), int(offsets[-1])) if len(column) else (0, 0)
    starts, lengths = offsets[:-1] - first, np.diff(offsets)
    longest = int(lengths.max(initial=0))
    # A slice's own bytes, then zeros: a value's words past its end (all values advance together) read those.
    padded = np.zeros(end - first + longest + 8, dtype=np.uint8)
    if end > first:
        padded[:end - first] = np.frombuffer(column.buffers()[2], dtype=np.uint8)[first:end]
    # Every byte position as the start of an unaligned 8-byte word: words[i] is bytes i..i+7.
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    with np.errstate(over="ignore"):
        hashed = lengths.astype(np.uint64) * _GOLDEN
        rows = None  # all of them, while most values still have bytes at this position
        for position in range(0, longest, 8):
            if rows is None and np.count_nonzero(lengths > position) < len(lengths) // 2:  # a long tail
                rows = np.flatnonzero(lengths > position)
            remaining = lengths - position if rows is None else lengths[rows] - position
            word = words[starts + position if rows is None else starts[rows] + position]
            if remaining.min() < 8:
                np.maximum(remaining, 0, out=remaining)  # np.clip is several times slower
                word &= _LAST_WORD_MASKS[np.minimum(remaining, 8, out=remaining)]
            word *= _WORD_WEIGHTS[(position // 8) % 64]
            if rows is None:
                hashed += word
            else:
                hashed[rows] += word
                rows = rows[lengths[rows] > position + 8]
    return _mix(hashed)
