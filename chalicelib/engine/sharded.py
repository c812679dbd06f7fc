"""A result kept as shards by key hash, each a few immutable runs (engine/runs.py): what one commit changes,
shard by shard.

Every group lives in exactly one shard (`aggregation.partition`), so merging, retracting or rebuilding a result
is the same operation done per shard on that shard's rows, and only the shards a change reaches get a new run;
the others keep their runs. A change is appended to a shard as a run of its own (a delta), so a commit costs
what changed; a shard small enough is rewritten as one run instead, and a rebuild (min/max or sketches losing a
version, a lost partial) or a re-partition replaces a shard's runs with one. Shards are independent, so they
are computed in parallel threads (Arrow releases the GIL). Pure: committed runs are read through `read`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pyarrow as pa

from ..aggregation import AggregationPlan
from ..aggregation.partition import split_by_shard
from .runs import REWRITE_GROUPS, Run, board_key, delta, merge_runs, shard_rows

SHARD_GROUPS = 1 << 20  # groups per shard before a result doubles its shards (Settings.shard_groups)
Shards = tuple[tuple[Run, ...], ...]  # each shard's live runs, oldest first


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
    tables: tuple[pa.Table | None, ...]  # each shard's new run; None: the shard has none
    kept: Shards      # the committed runs each shard keeps (all of them unless its new run replaces them)
    previous: Shards  # the committed runs this update was computed from
    output_rows: int | None = None  # a scan job's: its result is a table of files, its rows are theirs

    def shards(self, new_key: Callable[[int], str], boards: bool = False) -> Shards:
        """Each shard's runs once committed, a new run under `new_key(shard)`; `boards`: a new run that is its
        shard's only one (a rewrite) names a leaderboard too (engine/boards.py)."""
        def run(shard: int, kept: tuple[Run, ...], rows: int) -> Run:
            key = new_key(shard)
            return Run(key, rows, board_key(key) if boards and not kept else None)

        return tuple(kept + ((run(shard, kept, table.num_rows),) if table is not None and table.num_rows else ())
                     for shard, (kept, table) in enumerate(zip(self.kept, self.tables)))

    @property
    def rows(self) -> int:
        if self.output_rows is not None:
            return self.output_rows
        return sum(shard_rows(kept) + (table.num_rows if table is not None else 0)
                   for kept, table in zip(self.kept, self.tables))

    def superseded(self) -> list[str]:
        """The committed runs no shard names any more."""
        kept = {key for runs in self.kept for run in runs for key in run.keys}
        return sorted({key for runs in self.previous for run in runs for key in run.keys} - kept)


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


def update_shards(plan: AggregationPlan, count: int, committed: Shards, read: Callable[[str], pa.Table],
                  changes: Changes, parallelism: int = 4, rewrite_groups: int = REWRITE_GROUPS) -> ShardedUpdate:
    """The shards of the result once `changes` are applied to the committed one (`committed`: its runs per
    shard). A result committed with another shard count is re-partitioned here, family by family."""
    keys = plan.key_names

    def split(tables: Sequence[pa.Table]) -> list[list[pa.Table]]:
        return [split_by_shard(table, keys, count) for table in tables if table.num_rows]

    def merged(runs: Sequence[Run]) -> pa.Table:
        return merge_runs(plan, [read(run.key) for run in runs], includes_oldest=True)

    added, removed = split(changes.added), split(changes.removed)
    repartitioning = len(committed) != count and any(committed)
    previous = tuple(committed) if len(committed) == count else ((),) * count
    if repartitioning:
        tasks = [([committed[old] for old in olds], news) for olds, news in families(len(committed), count)]
    else:
        touched = range(count) if changes.everywhere else sorted(
            {shard for pieces in (*added, *removed) for shard, piece in enumerate(pieces) if piece.num_rows})
        tasks = [([previous[shard]], [shard]) for shard in touched]
    workers = max(1, min(parallelism, len(tasks) or 1))
    if changes.kept is not None:
        rebuilt = _fold(plan, [shard for _, shards in tasks for shard in shards], changes.kept, split, workers)

    def one(task: tuple[list[tuple[Run, ...]], list[int]]) -> list[tuple[int, tuple[Run, ...], pa.Table]]:
        """(shard, the runs it keeps, its new run) for the shards of one task."""
        sources, shards = task
        adding = {shard: [pieces[shard] for pieces in added] for shard in shards}
        if changes.kept is not None:  # rebuilt: the committed runs are not read
            return [(shard, (), merge_runs(plan, [rebuilt[shard], *adding[shard]], True)) for shard in shards]
        removing = {shard: [pieces[shard] for pieces in removed] for shard in shards}
        if repartitioning:
            pieces = split_by_shard(pa.concat_tables([plan.empty(), *(merged(runs) for runs in sources)]), keys, count)
            return [(shard, (), merge_runs(plan, [pieces[shard], *adding[shard],
                                                  *(plan.negated(p) for p in removing[shard])], True))
                    for shard in shards]
        [shard], [runs] = shards, sources
        change = delta(plan, adding[shard], removing[shard])
        if shard_rows(runs) + change.num_rows <= rewrite_groups or not runs:
            return [(shard, (), merge_runs(plan, [merged(runs), change], True))]
        return [(shard, runs, change)]

    with ThreadPoolExecutor(workers) as pool:
        done = {shard: (kept, new) for results in pool.map(one, tasks) for shard, kept, new in results}
    return ShardedUpdate(tuple(done[shard][1] if shard in done else None for shard in range(count)),
                         tuple(done[shard][0] if shard in done else previous[shard] for shard in range(count)),
                         tuple(committed))


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
