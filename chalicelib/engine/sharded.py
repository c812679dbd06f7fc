"""A result kept as shards by key hash: what one commit changes, shard by shard.

Every group lives in exactly one shard (`aggregation.partition`), so merging, retracting or rebuilding a result
is the same operation done per shard on that shard's rows, and only the shards a change reaches are read and
rewritten; the others keep their committed objects. Shards are independent, so they are computed in parallel
threads (Arrow releases the GIL). Pure: committed shards are read through `read`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pyarrow as pa

from ..aggregation import AggregationPlan
from ..aggregation.partition import split_by_shard

SHARD_GROUPS = 1 << 20  # groups per shard before a result doubles its shards (Settings.shard_groups)


@dataclass(frozen=True)
class Changes:
    """The partials one commit applies."""

    added: Sequence[pa.Table]
    removed: Sequence[pa.Table] = ()  # retracted versions' partials
    # Set for plans that cannot subtract (min/max, sketches): every live partial but the added ones, to
    # rebuild each touched shard from, in batches read one at a time (they may be the whole dataset's).
    kept: Iterable[Sequence[pa.Table]] | None = None
    # Rebuild every shard, not only those the added and removed partials reach (a lost partial's groups are
    # unknown).
    everywhere: bool = False


@dataclass(frozen=True)
class ShardedUpdate:
    tables: tuple[pa.Table | None, ...]  # a touched shard's new table; None: the shard keeps its object
    previous: tuple[str, ...]  # the committed object of each shard ("" for none) that a None keeps
    rows: int  # groups in the whole new result

    def result_keys(self, new_key: Callable[[int], str]) -> tuple[str, ...]:
        """Each shard's object once committed: the new key of a rewritten shard ("" if it is empty now)."""
        return tuple(
            self.previous[shard] if table is None else new_key(shard) if table.num_rows else ""
            for shard, table in enumerate(self.tables))

    def superseded(self, committed: Sequence[str]) -> list[str]:
        """The objects of `committed` (the result this update was computed from) no shard names any more."""
        kept = {self.previous[shard] for shard, table in enumerate(self.tables) if table is None}
        return sorted(set(filter(None, committed)) - kept)


def shard_count(limit: int, committed: int, groups: int, shard_groups: int = SHARD_GROUPS) -> int:
    """How many shards a result of up to `groups` groups is kept in: the power of two that holds `shard_groups`
    a shard, never fewer than the `committed` count (a shrinking result keeps its shards: no re-partitioning
    back and forth), and never more than the job's `limit`, to which a lowered limit brings it at once. A
    result grows 1, 2, 4, ... so each re-partition comes after its size has doubled, and splits each committed
    shard in two (`families`)."""
    needed = 1
    while needed * shard_groups < groups and needed < limit:
        needed *= 2
    return min(limit, max(committed, needed))


def update_shards(plan: AggregationPlan, count: int, committed: Sequence[str], committed_rows: int,
                  read: Callable[[str], pa.Table], changes: Changes, parallelism: int = 4) -> ShardedUpdate:
    """The shards of the result once `changes` are applied to the committed one (`committed`: its object
    per shard). A result committed with another shard count is re-partitioned here, family by family."""
    keys = plan.key_names

    def split(tables: Sequence[pa.Table]) -> list[list[pa.Table]]:
        return [split_by_shard(table, keys, count) for table in tables if table.num_rows]

    added, removed = split(changes.added), split(changes.removed)
    repartitioning = len(committed) != count and any(committed)
    previous = tuple(committed) if len(committed) == count else ("",) * count
    if repartitioning:
        tasks = [([committed[old] for old in olds], news) for olds, news in families(len(committed), count)]
    else:
        touched = range(count) if changes.everywhere else sorted(
            {shard for pieces in (*added, *removed) for shard, piece in enumerate(pieces) if piece.num_rows})
        tasks = [([previous[shard]], [shard]) for shard in touched]
    workers = max(1, min(parallelism, len(tasks) or 1))
    if changes.kept is not None:
        rebuilt = _fold(plan, [shard for _, shards in tasks for shard in shards], changes.kept, split, workers)

    def apply(shard: int, base: pa.Table) -> pa.Table:
        adding = [pieces[shard] for pieces in added]
        if changes.kept is not None:
            return plan.merge([rebuilt[shard], *adding])
        if removed:
            return plan.retract(base, [pieces[shard] for pieces in removed], adding)
        return plan.merge([base, *adding])

    def one(task: tuple[list[str], list[int]]) -> list[tuple[int, int, pa.Table]]:
        """(shard, its committed groups, its new table) for the shards of one task."""
        sources, shards = task
        tables = [read(key) for key in sources if key]
        if not repartitioning:
            bases = {shards[0]: tables[0] if tables else plan.empty()}
        else:
            pieces = split_by_shard(pa.concat_tables(tables) if tables else plan.empty(), keys, count)
            bases = {shard: pieces[shard] for shard in shards}
        return [(shard, bases[shard].num_rows, apply(shard, bases[shard])) for shard in shards]

    with ThreadPoolExecutor(workers) as pool:
        done = {shard: (old, new) for results in pool.map(one, tasks) for shard, old, new in results}
    tables = tuple(done[shard][1] if shard in done else None for shard in range(count))
    rows = committed_rows - sum(old for old, _ in done.values()) + sum(new.num_rows for _, new in done.values())
    return ShardedUpdate(tables, previous, rows)


def _fold(plan: AggregationPlan, shards: list[int], batches: Iterable[Sequence[pa.Table]],
          split: Callable[[Sequence[pa.Table]], list[list[pa.Table]]], workers: int) -> dict[int, pa.Table]:
    """`shards` merged from partials that come in batches: one batch in memory at a time, besides the shards."""
    merged = {shard: plan.empty() for shard in shards}
    if not shards:
        return merged  # nothing to rebuild: the batches are never read
    with ThreadPoolExecutor(workers) as pool:
        for batch in batches:
            pieces = split(batch)
            folded = list(pool.map(lambda shard: plan.merge([merged[shard], *(p[shard] for p in pieces)]), shards))
            merged = dict(zip(shards, folded))
    return merged


def families(committed: int, count: int) -> list[tuple[list[int], list[int]]]:
    """Re-partitioning `committed` shards into `count`, as (old shards, new shards) pairs such that every group
    of those old shards belongs to those new ones: each is done on its own, holding one family in memory, not
    the whole result. A shard is the key hash modulo the count, so when one count divides the other (a result
    doubling, a lowered power-of-two limit) the families are small; otherwise the whole result is one."""
    if count % committed == 0:  # growing: old shard j splits into j, j + committed, j + 2 committed, ...
        return [([old], list(range(old, count, committed))) for old in range(committed)]
    if committed % count == 0:  # shrinking: new shard s gathers s, s + count, ...
        return [(list(range(new, committed, count)), [new]) for new in range(count)]
    return [(list(range(committed)), list(range(count)))]
