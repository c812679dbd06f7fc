"""A shard of a result kept as a few immutable runs sorted by key: what a commit appends, how a read merges
them, and which runs compaction merges. Pure: runs are read and written by the reducer.

The layout is log-structured, as RocksDB's, RisingWave Hummock's and Materialize persist's: a commit does
not rewrite the shards its changes reach, it adds to each one run holding only the change (the merged added
partials and, for subtractable aggregates, the retracted ones negated: a delta), and the manifest names every
live run of every shard. A commit therefore costs what changed, not what exists (docs/results-layout.md).

A read merges a shard's runs: a group's states are the merge of its rows in every run, and a group whose row
count merges to 0 is gone (every row it counted was retracted). A delta may hold such a group with its other
states non-zero (an object replaced by one with as many rows in the group but other values), so only a merge
that includes the shard's oldest run, which holds no retraction of anything older, may drop it.

Compaction is size-tiered (RocksDB's universal style, SlateDB's 4-to-8 runs within 4x of each other's size):
the newest runs of similar size are merged into one once there are FAN_IN of them, so a group is rewritten
about log4(result / change) times in its life, not once per commit, and a shard keeps a few runs per factor of
4 in size. Levelled compaction would bound the runs a read merges more tightly but rewrite the big run on
every merge into it: the wrong trade for a result that mostly grows. MAX_RUNS caps what a read merges
whatever the sizes. A shard small enough to rewrite cheaply (REWRITE_GROUPS) is kept as one run at commit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..aggregation import AggregationPlan
from ..aggregation.functions import ROWS

FAN_IN = 4          # runs of one tier merged at once
TIER_RATIO = 4      # runs within this factor of each other's size are one tier
MAX_RUNS = 8        # a shard with more runs is compacted whatever their sizes
REWRITE_GROUPS = 1 << 16  # a shard of at most this many groups (runs and change) is rewritten as one run


@dataclass(frozen=True)
class Run:
    key: str
    rows: int  # rows it holds: groups, and in a delta also the groups it retracts from
    # The leaderboard of the shard's content up to and including this run (engine/boards.py): written where
    # the whole merged shard is in memory anyway, a rewrite or a compaction from the oldest run.
    board: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The objects this run is made of: what a commit that stops naming it hands to the collector."""
        return (self.key, self.board) if self.board else (self.key,)


def board_key(run_key: str) -> str:
    return run_key.removesuffix(".arrow") + ".top.arrow"


def shard_rows(runs: Sequence[Run]) -> int:
    """The shard's groups if it is one run; with several, an upper bound (runs may share groups, and a delta's
    retractions cancel groups of older runs), exact again once compacted."""
    return sum(run.rows for run in runs)


def merge_runs(plan: AggregationPlan, tables: Sequence[pa.Table], includes_oldest: bool) -> pa.Table:
    """Runs (oldest first) merged into one run, sorted by key. `includes_oldest`: the merge starts at the
    shard's oldest run, so groups whose rows all were retracted are dropped (see the module's docstring)."""
    merged = plan.merge(tables)
    if includes_oldest and merged.num_rows:
        merged = merged.filter(pc.not_equal(merged.column(ROWS.out), 0))
    return sort_by_key(plan, merged)


def delta(plan: AggregationPlan, added: Sequence[pa.Table], removed: Sequence[pa.Table]) -> pa.Table:
    """The change one commit makes to a shard as one run: the added partials and the removed ones negated,
    merged, sorted by key. Groups whose changes cancel are kept: see the module's docstring."""
    return sort_by_key(plan, plan.merge([*added, *(plan.negated(partial) for partial in removed)]))


def sort_by_key(plan: AggregationPlan, table: pa.Table) -> pa.Table:
    if table.num_rows < 2:
        return table
    return table.sort_by([(name, "ascending") for name in plan.key_names]).combine_chunks()


def pick_compaction(runs: Sequence[Run]) -> tuple[int, int] | None:
    """The runs (start, end: a slice of `runs`, oldest first) compaction should merge next, or None. The
    newest window of at least FAN_IN consecutive runs within TIER_RATIO of each other's size, widened to older
    runs of that tier; else, past MAX_RUNS, the newest runs that bring the shard back to MAX_RUNS."""
    sizes = [max(1, run.rows) for run in runs]
    for end in range(len(sizes), FAN_IN - 1, -1):
        start = end
        while start > 0 and max(sizes[start - 1:end]) <= TIER_RATIO * min(sizes[start - 1:end]):
            start -= 1
        if end - start >= FAN_IN:
            return start, end
    if len(runs) > MAX_RUNS:
        return len(runs) - (len(runs) - MAX_RUNS + 1), len(runs)
    return None
