"""Pages that read what they return: per shard, only the blocks a page needs (engine/blocks.py).

**By key** (and `prefix`, and a keyset cursor). A shard's content is the merge of its runs, so a group is final
only once every run's rows for it are read. Each run's blocks are read in the page's direction from the first
that can hold a key past the cursor (or in the prefix's range); after each round the merge is complete up to
the *bound*: the smallest last key read among the runs still being read (the largest first key, descending).
The groups within it are merged, finalized (`having`), filtered, and if fewer than the page asks for, the runs
stopped at the bound read their next block. A first page therefore reads one block per run per shard, plus
the indexes; a filter that keeps few groups (`window_from`/`window_to`, `having`) reads on until the page is
full, so it costs what it skips. Shards are read in parallel threads and merged.

**By an aggregate**: from each shard's leaderboard and the runs newer than it (engine/boards.py argues why the
top N are among those), with the groups the deltas touch completed by point reads of the blocks that can hold
them. A shard without a board, or one whose board cannot vouch for the page (many of its groups changed since,
or a cursor deep past it), is read whole: deep pages by value cost a shard each.

Runs whose keys hold a null or a NaN have no order a tuple comparison follows both ways: such shards are read
whole too. Pure of AWS: blocks come from a BlockReader over an ObjectStore.
"""
from __future__ import annotations

import bisect
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregation import AggregationPlan
from . import boards
from .blocks import BlockReader, RunView
from .runs import Run, merge_runs

Filter = Callable[[pa.Table], pa.Table]  # keeps the finalized rows a query asks for (prefix, window)


@dataclass(frozen=True)
class KeyRange:
    """The keys a page by key may hold, in the runs' (ascending) order: after `low` (exclusive, a cursor of an
    ascending page), before `high` (exclusive, a descending page's cursor), and on the first key column
    starting with `prefix`."""

    low: tuple | None = None
    high: tuple | None = None
    prefix: str | None = None

    def below(self, key: tuple) -> bool:
        return (self.low is not None and key <= self.low) or (self.prefix is not None and key[0] < self.prefix)

    def above(self, key: tuple) -> bool:
        return (self.high is not None and key >= self.high) or (
            self.prefix is not None and key[0] > self.prefix and not key[0].startswith(self.prefix))


def shard_by_key(reader: BlockReader, plan: AggregationPlan, runs: Sequence[Run], keys: KeyRange, desc: bool,
                 want: int, keep: Filter) -> pa.Table | None:
    """The shard's first `want` finalized groups in key order (all of them if fewer), or None if its runs' keys
    have no plain order (read it whole)."""
    views = [reader.view(run.key) for run in runs]
    if not all(view.plain_keys for view in views):
        return None
    order = [_blocks_in_range(view, keys, desc) for view in views]
    read: list[list[pa.Table]] = [[] for _ in views]
    frontier: list[tuple | None] = [None] * len(views)
    while True:
        bound = _bound(frontier, order, desc)
        for r in range(len(views)):  # the runs holding the bound back read their next block
            if order[r] and (frontier[r] is None or frontier[r] == bound):
                i = order[r].pop(0)
                read[r].append(reader.block(views[r], i))
                frontier[r] = views[r].blocks[i].first if desc else views[r].blocks[i].last
        bound = _bound(frontier, order, desc)
        done = KeyRange(keys.low if not desc else bound, keys.high if desc else bound, keys.prefix)
        slices = [_slice(plan, tables, done, inclusive=bound is not None, desc=desc)
                  for tables in read if tables]
        rows = keep(plan.finalize(merge_runs(plan, slices, includes_oldest=True))) if slices else None
        if bound is None or (rows is not None and rows.num_rows >= want):
            break
    if rows is None:  # no run holds a block in range
        return plan.finalize(plan.empty())
    if desc:
        rows = rows.take(pa.array(np.arange(rows.num_rows - 1, -1, -1)))
    return rows.slice(0, want)


def _blocks_in_range(view: RunView, keys: KeyRange, desc: bool) -> list[int]:
    """The run's blocks that may hold keys in `keys`, in the order a page reads them."""
    wanted = [i for i, b in enumerate(view.blocks) if not keys.below(b.last) and not keys.above(b.first)]
    return wanted[::-1] if desc else wanted


def _bound(frontier: list[tuple | None], order: list[list[int]], desc: bool) -> tuple | None:
    """Up to where (from where, descending) every run's rows are read: the runs with no block left have given
    all theirs. None once no run has blocks left (or before the first round)."""
    pending = [f for f, left in zip(frontier, order) if left and f is not None]
    if not pending:
        return None
    return max(pending) if desc else min(pending)


def _slice(plan: AggregationPlan, tables: list[pa.Table], keys: KeyRange, inclusive: bool, desc: bool) -> pa.Table:
    """The rows of one run's blocks read (in read order) within `keys`; the bound end included (`inclusive`)."""
    table = pa.concat_tables(tables[::-1] if desc else tables)
    names = plan.key_names

    def key(i: int) -> tuple:
        return tuple(table.slice(i, 1).select(names).to_pylist()[0].values())

    def first(test: Callable[[tuple], bool]) -> int:  # first row for which `test` holds; it is monotone
        return bisect.bisect_left(range(table.num_rows), True, key=lambda i: test(key(i)))

    start = first(lambda k: not _below(keys, k, desc and inclusive))
    end = first(lambda k: _above(keys, k, not desc and inclusive))
    return table.slice(start, max(0, end - start))


def _below(keys: KeyRange, k: tuple, bound_inclusive: bool) -> bool:
    if bound_inclusive and keys.low is not None and k == keys.low:
        return keys.prefix is not None and k[0] < keys.prefix
    return keys.below(k)


def _above(keys: KeyRange, k: tuple, bound_inclusive: bool) -> bool:
    if bound_inclusive and keys.high is not None and k == keys.high:
        return keys.prefix is not None and k[0] > keys.prefix and not k[0].startswith(keys.prefix)
    return keys.above(k)


def shard_by_value(reader: BlockReader, plan: AggregationPlan, runs: Sequence[Run], sort_keys: list,
                   position_after: Callable[[pa.Table], int], want: int, keep: Filter) -> pa.Table | None:
    """The shard's first `want` finalized groups after the cursor in an aggregate's order, from its newest
    leaderboard and the runs after it; None if the board cannot vouch for them (boards.py): read it whole."""
    based = [i for i, run in enumerate(runs) if run.board]
    # Null keys match nothing in a join: such shards (rare) are read whole.
    if not based or not all(reader.view(run.key).plain_keys for run in runs):
        return None
    base = based[-1]
    board, meta = reader.small(runs[base].board, lambda data: boards.decode_board(plan, data))
    deltas = [reader.whole(reader.view(run.key)) for run in runs[base + 1:]]
    delta = plan.merge(deltas) if deltas else plan.empty()
    if not meta.get("complete"):
        leaders = keep(boards.ranked(plan, board, sort_keys, int(meta["k"])))
        fresh = boards.untouched(plan, leaders, delta)
        if int(fresh[position_after(leaders):].sum()) < want:
            return None
    unknown = _absent(plan, delta, board) if not meta.get("complete") else delta.slice(0, 0)
    base_rows = [board, *point_reads(reader, plan, runs[:base + 1], unknown)]
    merged = merge_runs(plan, [*base_rows, delta], includes_oldest=True)
    values = keep(plan.finalize(merged))
    values = values.take(pc.sort_indices(values, sort_keys=sort_keys))
    return values.slice(position_after(values), want)


def _absent(plan: AggregationPlan, table: pa.Table, board: pa.Table) -> pa.Table:
    """The keys of `table` that `board` does not hold."""
    absent = boards.untouched(plan, table, board)
    return table.select(plan.key_names).filter(pa.array(absent))


def point_reads(reader: BlockReader, plan: AggregationPlan, runs: Sequence[Run], wanted: pa.Table) -> list[pa.Table]:
    """Every row the runs hold for the keys in `wanted`: only the blocks whose key range can hold one."""
    if not wanted.num_rows:
        return []
    names = plan.key_names
    targets = sorted(tuple(row.values()) for row in wanted.select(names).to_pylist())
    found = []
    for run in runs:
        view = reader.view(run.key)
        for i, block in enumerate(view.blocks):
            if view.plain_keys and not _any_within(targets, block.first, block.last):
                continue
            table = reader.block(view, i)
            found.append(table.filter(pa.array(~boards.untouched(plan, table, wanted))))
    return found


def _any_within(targets: list[tuple], first: tuple, last: tuple) -> bool:
    i = bisect.bisect_left(targets, first)
    return i < len(targets) and targets[i] <= last


# Shards read whole at once, across requests: each holds its shard merged in memory, so this bounds the API's
# memory by two shards, not by the result, while the other threads read by range.
_WHOLE_SHARDS = threading.BoundedSemaphore(2)


def read_page(reader: BlockReader, plan: AggregationPlan, shards: Sequence[Sequence[Run]], sort_keys: list,
              order_by: str | None, desc: bool, after: list[Any] | None, prefix: str | None, keep: Filter,
              position_after: Callable[[pa.Table], int], limit: int) -> tuple[pa.Table, bool]:
    """The page's finalized rows in order, and whether more follow: each shard's first `limit` + 1 after the
    cursor, merged. A shard its fast path cannot answer for is read whole (the module's docstring)."""
    want = limit + 1

    def one(runs: Sequence[Run]) -> pa.Table:
        if order_by is None:
            cursor = tuple(after) if after is not None else None
            keys = KeyRange(high=cursor, prefix=prefix) if desc else KeyRange(low=cursor, prefix=prefix)
            table = shard_by_key(reader, plan, runs, keys, desc, want, keep)
        else:
            table = shard_by_value(reader, plan, runs, sort_keys, position_after, want, keep)
        if table is None:
            with _WHOLE_SHARDS:
                whole = merge_runs(plan, [reader.whole(reader.view(run.key)) for run in runs], includes_oldest=True)
                values = keep(plan.finalize(whole))
                values = values.take(pc.sort_indices(values, sort_keys=sort_keys))
                table = values.slice(position_after(values), want)
        return table

    live = [runs for runs in shards if runs]
    with ThreadPoolExecutor(max(1, min(8, len(live)))) as pool:  # Arrow, zstd and boto3 release the GIL
        tables = list(pool.map(one, live)) or [plan.finalize(plan.empty())]
    merged = pa.concat_tables(tables, promote_options="permissive")
    merged = merged.take(pc.sort_indices(merged, sort_keys=sort_keys)[:want])
    return merged.slice(0, limit), merged.num_rows > limit
