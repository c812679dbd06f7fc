"""The shard of a group: the same in every process and release, the same however its rows are batched, and
balanced across shards on the benchmark's keys."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.aggregation.partition import hash_column, shard_of, split_by_shard

KEYS = pa.table({
    "ip": ["1.2.3.", "", None, "200.100.50.2", "a much longer key than eight bytes"],
    "day": pa.array([dt.date(2001, 2, 3)] * 4 + [None], pa.date32()),
    "n": pa.array([0, -1, 2 ** 40, None, 7], pa.int64()),
    "d": pa.array([Decimal("1.5"), None, Decimal("-2"), Decimal("0"), Decimal("3.25")], pa.decimal128(18, 6)),
})


def test_hashes_are_pinned_because_results_are_stored_by_shard():
    """Shard ids name stored objects: a changed hash would put committed groups in the wrong shard."""
    assert [int(h) for h in hash_column(KEYS.column("ip"))] == [
        5334148447609909285, 16294208416658607535, 7640891576956012809, 7601278736005618919,
        10596202574449468763]
    assert [int(h) for h in hash_column(KEYS.column("d"))] == [
        14669785481832353237, 7640891576956012809, 2026775470127908501, 9669442505924063346, 242943175259247]
    assert shard_of(KEYS, ["ip"], 16).tolist() == [5, 15, 9, 7, 11]
    assert shard_of(KEYS, ["ip", "day"], 16).tolist() == [0, 8, 13, 2, 10]
    assert shard_of(KEYS, ["n", "d"], 7).tolist() == [2, 4, 2, 0, 0]


def test_a_null_key_hashes_the_same_in_every_column_type():
    nulls = [int(hash_column(KEYS.column(name))[row]) for name, row in (("ip", 2), ("day", 4), ("n", 3), ("d", 1))]
    assert len(set(nulls)) == 1


TEXT = st.text(max_size=40) | st.sampled_from(["", "a", "a\0", "abcdefgh", "abcdefgh\0"])


@given(st.lists(st.none() | TEXT, min_size=1, max_size=60), st.integers(0, 59), st.booleans())
def test_a_strings_hash_does_not_depend_on_its_batch(values, cut, large):
    """Slices, chunks and large offsets: the mapper and the reducer see a group in different batches."""
    kind = pa.large_string() if large else pa.string()
    whole = hash_column(pa.array(values, kind))
    cut = min(cut, len(values))
    chunked = pa.chunked_array([pa.array(values[:cut], kind), pa.array(values[cut:], kind)], kind)
    assert (hash_column(chunked) == whole).all()
    assert (hash_column(pa.array(values, kind).slice(cut)) == whole[cut:]).all()
    assert [int(hash_column(pa.array([v], kind))[0]) for v in values] == whole.tolist()


def test_values_arrow_groups_together_share_a_shard():
    floats = hash_column(pa.array([0.0, -0.0, float("nan"), -float("nan")]))
    assert floats[0] == floats[1] and floats[2] == floats[3]
    assert len(set(hash_column(pa.array(["a", "a\0", "", "\0"])).tolist())) == 4  # the length counts
    dictionary = pa.array(["x", "y", "x"]).dictionary_encode()
    assert (hash_column(dictionary) == hash_column(pa.array(["x", "y", "x"]))).all()


def _chi_square(shards: np.ndarray, count: int) -> float:
    observed = np.bincount(shards, minlength=count)
    expected = len(shards) / count
    return float(((observed - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("count", [4, 16, 256])
def test_bdb_ip_prefixes_spread_evenly_over_shards(count):
    """2b/2c keys: the first 10 or 12 characters of dotted IPs. With count-1 degrees of freedom a uniform
    hash stays under count + 5 sqrt(2 count) (about five standard deviations)."""
    rng = np.random.default_rng(11)
    octets = rng.integers(0, 256, size=(200_000, 4))
    ips = [f"{a}.{b}.{c}.{d}"[:12] for a, b, c, d in octets]
    keys = pa.table({"prefix": sorted(set(ips))})
    assert _chi_square(shard_of(keys, ["prefix"], count), count) < count + 5 * (2 * count) ** 0.5


@pytest.mark.parametrize("column", [
    pa.array(np.arange(100_000, dtype=np.int64) * 1000),  # ids with structure in their low bits
    pa.array(np.arange(100_000, dtype=np.int32), pa.date32()),
    pa.array([Decimal(i) / 100 for i in range(100_000)], pa.decimal128(18, 6)),
])
def test_structured_numeric_keys_spread_evenly_over_shards(column):
    assert _chi_square(shard_of(pa.table({"k": column}), ["k"], 16), 16) < 16 + 5 * 32 ** 0.5


def test_split_by_shard_keeps_every_row_once_in_its_shard():
    table = pa.table({"k": [f"key{i}" for i in range(1000)], "v": list(range(1000))})
    pieces = split_by_shard(table, ["k"], 8)
    assert len(pieces) == 8 and sum(p.num_rows for p in pieces) == 1000
    for shard, piece in enumerate(pieces):
        assert (shard_of(piece, ["k"], 8) == shard).all()
        assert piece.column("v").to_pylist() == sorted(piece.column("v").to_pylist())  # order kept
    assert split_by_shard(table, ["k"], 1) == [table]


def test_shard_counts_must_be_positive():
    with pytest.raises(ValueError):
        shard_of(KEYS, ["ip"], 0)
