"""Leaderboards: a page ordered by an aggregate without reading the shard it ranks.

Where a shard is held merged in memory anyway (a commit that rewrites it as one run, a compaction from its
oldest run), the groups that rank in the top BOARD_ROWS by each orderable aggregate, ascending and descending
(ties broken by key, as pages are), are kept as a small object beside that run: their state rows, so they can
be merged with later runs. The run names it (`runs.Run.board`); it describes the shard's content up to and
including that run, its *base*.

Why a board and the runs after its base answer the top N exactly. Let L be a board's top K groups for one order
D (aggregate, direction, then key) at the time T it was written, and Δ the groups that the shard's later runs
(deltas) hold rows of. A group g outside L ∪ Δ has the state it had at T (no later run touched it), so the
same value and the same verdict of `having`; at T it ranked after every group of L (it is not in L, L is the
top K of every group then). Every group of L \\ Δ is untouched too, so each still ranks before g. So if at
least N groups of L \\ Δ rank after a cursor, g has N groups before it after that cursor and is not in the
page: the top N after the cursor are among L ∪ Δ, whose current states are their base states merged with
their rows in the deltas. A board of a shard of at most K groups holds all of them (`complete`): L ∪ Δ is then
every group. Otherwise, when too many of L were touched or the cursor is past most of L (a deep page), the
caller reads the shard whole.

Pure: tables in, tables out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregation import AggregationPlan
from ..aggregation.codec import decode, encode

BOARD_ROWS = 2000  # K: twice the largest page (results.MAX_LIMIT), so a page and the next one's start fit


def orderable(plan: AggregationPlan) -> list[str]:
    """The aggregates a page may be ordered by: those whose values are not lists."""
    return [spec.out for spec in plan.aggregates if not pa.types.is_nested(plan.result_schema.field(spec.out).type)]


def order(plan: AggregationPlan, name: str, direction: str) -> list[tuple[str, str]]:
    """A page's order by an aggregate: its values, then the key ascending (results._sort_keys)."""
    return [(name, direction), *((key, "ascending") for key in plan.key_names if key != name)]


def leaderboard(plan: AggregationPlan, shard: pa.Table, k: int | None = None) -> tuple[pa.Table, dict]:
    """The board of a whole merged shard (sorted by key): its state rows, and its meta."""
    k = k or BOARD_ROWS
    if shard.num_rows <= k:
        return shard, {"k": k, "complete": True}
    values = plan.values(shard)
    positions = np.arange(shard.num_rows)
    if plan.having is not None:
        held = pc.fill_null(plan.having.evaluate_array(values), False)
        values, positions = values.filter(held), positions[held.to_numpy(zero_copy_only=False)]
    chosen: set[int] = set()
    for name in orderable(plan):
        for direction in ("ascending", "descending"):
            # select_k orders as sort_indices does (nulls and NaN last) and costs O(n), not a sort of the shard.
            if values.num_rows:
                top = pc.select_k_unstable(values, min(k, values.num_rows), sort_keys=order(plan, name, direction))
                chosen.update(positions[top.to_numpy()].tolist())
    return shard.take(pa.array(sorted(chosen), pa.int64())), {"k": k, "complete": False}


def encode_board(plan: AggregationPlan, shard: pa.Table) -> bytes:
    board, meta = leaderboard(plan, shard)
    return encode(board, plan.fingerprint, {**meta, "kind": "board"})


def decode_board(plan: AggregationPlan, data: bytes) -> tuple[pa.Table, dict]:
    return decode(data, plan.fingerprint)


def ranked(plan: AggregationPlan, states: pa.Table, sort_keys: Sequence[tuple[str, str]], k: int) -> pa.Table:
    """The first `k` groups of `states` in a page's order, finalized (`having` applied)."""
    values = plan.finalize(states)
    return values.take(pc.sort_indices(values, sort_keys=list(sort_keys))[:k])


def keys_table(plan: AggregationPlan, table: pa.Table) -> pa.Table:
    return table.select(plan.key_names)


def untouched(plan: AggregationPlan, table: pa.Table, touched: pa.Table) -> np.ndarray:
    """Which rows of `table` have a key that no row of `touched` holds."""
    if not touched.num_rows or not table.num_rows:
        return np.ones(table.num_rows, dtype=bool)
    marked = keys_table(plan, touched).append_column("__hit", pa.array(np.ones(touched.num_rows, dtype=bool)))
    probe = keys_table(plan, table).append_column("__pos", pa.array(np.arange(table.num_rows)))
    joined = probe.join(marked, plan.key_names, join_type="left outer")
    hit = np.zeros(table.num_rows, dtype=bool)
    found = joined.filter(pc.is_valid(joined.column("__hit")))
    hit[found.column("__pos").to_numpy()] = True
    for name in plan.key_names:  # a join matches no null key: count such groups touched, the safe side
        hit |= pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
    return ~hit
