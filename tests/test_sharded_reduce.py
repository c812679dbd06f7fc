"""Sharded results: a job kept in shards serves exactly what the same job kept whole serves, whatever is merged,
retracted or rebuilt; a commit rewrites only the shards its groups fall in; a changed shard count or a manifest
from before shards is carried over; a crash between shards and manifest leaves only collectable garbage."""
from __future__ import annotations

import datetime as dt

import json
from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.changes import plan_changes
from chalicelib.engine.reducer import Reducer, ReduceReport
from chalicelib.engine.sharded import shard_count
from chalicelib.engine.results import ResultReader, ResultsQuery
from chalicelib.errors import CommitConflict
from chalicelib.jobs import Job, JobCatalog
from chalicelib.runtime import utc_now
from reducers.tables import TABLES

from . import test_udaf  # noqa: F401 - registers the value_set aggregate
from .conftest import collect_garbage, uservisits_rows
from .faults import FaultyStore, Killed
from .test_reducer import CountingStore

USERVISITS = TABLES["uservisits"].format

SUBTRACTABLE = {"revenue": "sum(adRevenue)", "visits": "count()"}
# max, a sketch and a user aggregate cannot be subtracted: deletes rebuild the shards they reach.
REBUILT = {**SUBTRACTABLE, "longest": "max(duration)", "visitors": "approx_distinct(sourceIP)",
           "durations": "value_set(duration)"}


@pytest.fixture
def runtime(runtime):
    """These tests are about shards: every sharded job here is at its full shard count from its first commit
    (a result's growth into shards has its own tests, below)."""
    runtime.settings = runtime.settings.model_copy(update={"shard_groups": 1})
    runtime.__dict__.pop("reducer", None)
    return runtime


def job(name: str, aggregates: dict, shards: int) -> Job:
    return Job(name=name, prefix="uservisits/", format=USERVISITS, keys={"ip": "substr(sourceIP, 1, 12)"},
               aggregates=aggregates, shards=shards)


def install(runtime, *jobs: Job) -> None:
    """Run these jobs: the runtime's parts built from the catalog are built again on first use."""
    for built in ("mapper", "reducer", "reconciler", "results", "scan_results", "status"):
        runtime.__dict__.pop(built, None)
    runtime.__dict__["jobs"] = JobCatalog(list(jobs))


def served(runtime, name: str) -> list[dict]:
    _, table = runtime.results.current(runtime.jobs.get(name))
    return sorted(table.to_pylist(), key=lambda row: row["ip"])


def ips(first: int, count: int) -> list[tuple[str, str]]:
    return [(f"{i % 250}.{i * 7 % 256}.{i * 13 % 256}.{i % 9}", f"{i % 17}.25") for i in range(first, first + count)]


def upload(runtime, uploads, files: dict[str, list[tuple[str, str]]]) -> None:
    for key, rows in files.items():
        runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))


def reduce(runtime, *names: str) -> None:
    for name in names:
        while runtime.reducer.reduce_job(runtime.jobs.get(name)).more_pending:
            pass


def manifest(runtime, name: str):
    return runtime.reducer.read_manifest(runtime.jobs.get(name))[0]


FILES = {f"uservisits/f{n}.csv": ips(n * 15, 30) for n in range(5)}  # overlapping groups across files


@pytest.mark.parametrize("aggregates", [SUBTRACTABLE, REBUILT], ids=["retracted", "rebuilt"])
def test_a_sharded_result_is_the_unsharded_result_through_merges_overwrites_and_deletes(runtime, uploads,
                                                                                          aggregates):
    install(runtime, job("whole", aggregates, 1), job("sharded", aggregates, 8))
    upload(runtime, uploads, FILES)
    reduce(runtime, "whole", "sharded")
    assert served(runtime, "sharded") == served(runtime, "whole") and len(served(runtime, "whole")) > 50
    assert len(manifest(runtime, "sharded").shards) == 8

    upload(runtime, uploads, {"uservisits/f1.csv": ips(500, 4)})  # overwritten
    runtime.mapper.handle(uploads.event(uploads.delete("uservisits/f3.csv")))
    reduce(runtime, "whole", "sharded")

    assert served(runtime, "sharded") == served(runtime, "whole")
    assert manifest(runtime, "sharded").rows == manifest(runtime, "whole").rows == len(served(runtime, "whole"))


def test_a_commit_rewrites_only_the_shards_its_groups_fall_in(runtime, uploads):
    install(runtime, job("sharded", SUBTRACTABLE, 8))
    upload(runtime, uploads, FILES)
    reduce(runtime, "sharded")
    before = manifest(runtime, "sharded").shards
    counting = CountingStore(runtime.state_store)
    puts: list[str] = []
    counting.put_if_absent = lambda key, *rest: puts.append(key) or runtime.state_store.put_if_absent(key, *rest)
    runtime.__dict__["reducer"] = Reducer(runtime.jobs, counting, runtime.input_store, utc_now, shard_groups=1)

    upload(runtime, uploads, {"uservisits/one-group.csv": [("9.9.9.9", "1"), ("9.9.9.9", "2")]})
    reduce(runtime, "sharded")

    after = manifest(runtime, "sharded").shards
    changed = [shard for shard, (old, new) in enumerate(zip(before, after)) if old != new]
    assert len(changed) == 1
    assert sorted(key for key in puts if "/results/" in key) == sorted(after[changed[0]][-1].keys)  # run, board
    live = {key for runs in after for run in runs for key in run.keys}
    assert {run.key for run in before[changed[0]]} <= {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))}
    collect_garbage(runtime, "sharded")  # an hour later, no reader of the old manifest is left
    assert {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))} == live  # old one deleted


def test_a_single_group_is_read_from_the_one_shard_that_holds_it(runtime, uploads):
    install(runtime, job("sharded", SUBTRACTABLE, 8))
    upload(runtime, uploads, FILES)
    reduce(runtime, "sharded")
    counting = CountingStore(runtime.state_store)
    cold = ResultReader(Reducer(runtime.jobs, counting, runtime.input_store, utc_now, shard_groups=1))
    reads: list[str] = []
    counting.get = lambda key: reads.append(key) or runtime.state_store.get(key)
    ip = ips(0, 1)[0][0][:12]

    group = cold.group(runtime.jobs.get("sharded"), ip)

    assert group["key"] == {"ip": ip} and group["values"]["visits"] >= 1
    assert len([key for key in reads if "/results/" in key]) == 1


def test_pages_of_a_sharded_result_are_the_pages_of_the_unsharded_one(runtime, uploads):
    install(runtime, job("whole", SUBTRACTABLE, 1), job("sharded", SUBTRACTABLE, 8))
    upload(runtime, uploads, FILES)
    reduce(runtime, "whole", "sharded")

    def pages(name: str, **params) -> list:
        definition, cursor, seen = runtime.jobs.get(name), None, []
        while True:
            query = ResultsQuery.from_params(definition, {**params, "limit": "7", **({"cursor": cursor} if cursor else {})})
            page = runtime.results.page(definition, query)
            seen.append((page.rows, page.next_cursor, page.total_rows))
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    for params in ({}, {"order_by": "revenue", "desc": "true"}, {"prefix": "1"}):
        assert pages("sharded", **params) == pages("whole", **params)


def test_changing_the_shard_count_repartitions_on_the_next_commit_and_keeps_the_result(runtime, uploads):
    install(runtime, job("whole", REBUILT, 1), job("sharded", REBUILT, 8))
    upload(runtime, uploads, FILES)
    reduce(runtime, "whole", "sharded")
    install(runtime, job("whole", REBUILT, 1), job("sharded", REBUILT, 3))  # the same fingerprint
    ip = ips(0, 1)[0][0][:12]
    # Until the next commit the manifest's 8 shards are served: a group is looked up in one of those.
    assert runtime.results.group(runtime.jobs.get("sharded"), ip) == runtime.results.group(
        runtime.jobs.get("whole"), ip)

    upload(runtime, uploads, {"uservisits/more.csv": ips(1000, 5)})
    reduce(runtime, "whole", "sharded")

    assert len(manifest(runtime, "sharded").shards) == 3
    assert served(runtime, "sharded") == served(runtime, "whole")
    collect_garbage(runtime, "sharded")
    listed = {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))}
    assert listed == set(manifest(runtime, "sharded").result_keys)  # the 8 old shards deleted, 3 runs and boards


def test_a_manifest_from_before_shards_is_read_as_one_shard_and_repartitioned(runtime, uploads):
    install(runtime, job("whole", SUBTRACTABLE, 1), job("sharded", SUBTRACTABLE, 1))
    upload(runtime, uploads, dict(list(FILES.items())[:3]))
    reduce(runtime, "whole", "sharded")
    fields = json.loads(runtime.state_store.get(layout.manifest_key("sharded"))[0])
    fields["result_key"] = fields.pop("shards")[0][0][0]  # as the reducer wrote it before shards
    runtime.state_store.put(layout.manifest_key("sharded"), json.dumps(fields).encode())
    install(runtime, job("whole", SUBTRACTABLE, 1), job("sharded", SUBTRACTABLE, 4))
    assert served(runtime, "sharded") == served(runtime, "whole")

    upload(runtime, uploads, dict(list(FILES.items())[3:]))
    reduce(runtime, "whole", "sharded")

    assert len(manifest(runtime, "sharded").shards) == 4
    assert served(runtime, "sharded") == served(runtime, "whole")


def test_a_crash_between_the_shards_and_the_manifest_leaves_garbage_the_collector_deletes(runtime, uploads):
    install(runtime, job("sharded", SUBTRACTABLE, 8))
    upload(runtime, uploads, dict(list(FILES.items())[:2]))
    reduce(runtime, "sharded")
    upload(runtime, uploads, dict(list(FILES.items())[2:]))
    faulty = Reducer(runtime.jobs, FaultyStore(runtime.state_store, "put_if_absent", nth=3, key_contains="/results/"),
                     runtime.input_store, utc_now, parallelism=1, shard_groups=1)
    with pytest.raises(Killed):
        faulty.reduce_job(runtime.jobs.get("sharded"))  # three new shards written, no manifest
    reduce(runtime, "sharded")
    live = set(manifest(runtime, "sharded").result_keys)
    assert len(list(runtime.state_store.list(layout.results_prefix("sharded")))) > len(live)
    collect_garbage(runtime, "sharded", after=dt.timedelta(minutes=30))  # too soon: a run may still commit them
    assert len(list(runtime.state_store.list(layout.results_prefix("sharded")))) > len(live)

    collect_garbage(runtime, "sharded")

    assert {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))} == live


def test_a_warm_reducer_holds_every_shard_it_committed(runtime, uploads):
    install(runtime, job("sharded", SUBTRACTABLE, 16))
    counting = CountingStore(runtime.state_store)
    fetched: list[str] = []
    counting.get = lambda key: fetched.append(key) or runtime.state_store.get(key)
    warm = Reducer(runtime.jobs, counting, runtime.input_store, utc_now, shard_groups=1)
    upload(runtime, uploads, dict(list(FILES.items())[:3]))
    warm.reduce_job(runtime.jobs.get("sharded"))
    for n in range(3):
        upload(runtime, uploads, {f"uservisits/g{n}.csv": ips(700 + 40 * n, 40)})
        fetched.clear()
        warm.reduce_job(runtime.jobs.get("sharded"))
        assert [key for key in fetched if "/results/" in key or "/ledger/" in key] == []


def test_of_two_overlapping_reducers_one_commits_and_the_other_deletes_only_the_shards_it_wrote(runtime, uploads):
    install(runtime, job("whole", SUBTRACTABLE, 1), job("sharded", SUBTRACTABLE, 8))
    upload(runtime, uploads, dict(list(FILES.items())[:2]))
    reduce(runtime, "whole", "sharded")
    upload(runtime, uploads, {"uservisits/late.csv": ips(900, 3)})  # reaches a few shards, keeps the others
    sharded = runtime.jobs.get("sharded")
    first = runtime.reducer
    second = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now, shard_groups=1)
    seen_first, seen_second = first.gather(sharded), second.gather(sharded)

    first.execute(sharded, seen_first, plan_changes(seen_first.entries, seen_first.markers, seen_first.current),
                  ReduceReport("sharded"))
    with pytest.raises(CommitConflict):
        second.execute(sharded, seen_second,
                       plan_changes(seen_second.entries, seen_second.markers, seen_second.current),
                       ReduceReport("sharded"))
    reduce(runtime, "whole", "sharded")

    assert served(runtime, "sharded") == served(runtime, "whole")
    live = set(manifest(runtime, "sharded").result_keys)
    collect_garbage(runtime, "sharded")
    assert {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))} == live


def test_fresh_reads_apply_the_inbox_to_the_shards(runtime, uploads):
    install(runtime, job("whole", REBUILT, 1), job("sharded", REBUILT, 8))
    upload(runtime, uploads, dict(list(FILES.items())[:3]))
    reduce(runtime, "whole", "sharded")
    upload(runtime, uploads, {"uservisits/f0.csv": ips(800, 6)})  # not reduced: only a fresh read sees it

    def fresh(name: str) -> list[dict]:
        _, table = runtime.results.current(runtime.jobs.get(name), fresh=True)
        return sorted(table.to_pylist(), key=lambda row: row["ip"])

    assert fresh("sharded") == fresh("whole") != served(runtime, "whole")
    ip = ips(800, 1)[0][0][:12]
    assert runtime.results.group(runtime.jobs.get("sharded"), ip, fresh=True) == runtime.results.group(
        runtime.jobs.get("whole"), ip, fresh=True)


def test_a_shards_key_carries_its_generation_for_the_garbage_collector():
    keys = layout.generation_keys("sharded", 42)
    assert keys.result(3).startswith(layout.results_prefix("sharded")) and keys.result(3).endswith("-s003.arrow")
    assert layout.generation_of(keys.result(3)) == layout.generation_of(keys.ledger) == 42


def test_shards_are_a_setting_of_aggregations_from_1_to_256():
    assert job("j", SUBTRACTABLE, 256).shards == 256
    for wrong in (0, 257):
        with pytest.raises(ValueError):
            job("j", SUBTRACTABLE, wrong)
    with pytest.raises(ValueError, match="no shards"):
        Job(name="s", prefix="p/", format=USERVISITS, select={"ip": "sourceIP"}, shards=2)


@pytest.mark.parametrize("limit, committed, groups, expected", [
    (16, 0, 0, 1), (16, 0, 10, 1),  # a small result is one object
    (16, 0, 11, 2), (16, 0, 41, 8),  # then the power of two that holds 10 groups a shard
    (16, 0, 10_000, 16), (12, 0, 10_000, 12),  # never more than the job's limit
    (16, 8, 10, 8),  # a shrinking result keeps its shards
    (4, 8, 10, 4),  # a lowered limit applies at once
])
def test_a_result_grows_into_its_shards_by_doubling(limit, committed, groups, expected):
    assert shard_count(limit, committed, groups, shard_groups=10) == expected


def test_a_sharded_result_starts_whole_and_is_repartitioned_as_it_grows(runtime, uploads):
    """Up to 8 shards of at most 40 groups: the first file's groups fit one, later files double the count; the
    served result is the unsharded one throughout."""
    runtime.settings = runtime.settings.model_copy(update={"shard_groups": 40})
    install(runtime, job("whole", REBUILT, 1), job("sharded", REBUILT, 8))
    counts = []
    for n in range(5):
        upload(runtime, uploads, {f"uservisits/f{n}.csv": ips(n * 30, 30)})  # 30 new groups a file
        reduce(runtime, "whole", "sharded")
        counts.append(len(manifest(runtime, "sharded").shards))
        assert served(runtime, "sharded") == served(runtime, "whole")

    assert counts == [1, 2, 4, 4, 4]  # 30, 60, 90, 120, 150 groups
    runtime.mapper.handle(uploads.event(uploads.delete("uservisits/f4.csv")))
    reduce(runtime, "whole", "sharded")
    assert len(manifest(runtime, "sharded").shards) == 4 and served(runtime, "sharded") == served(runtime, "whole")
    live = set(manifest(runtime, "sharded").result_keys)
    collect_garbage(runtime, "sharded")
    assert {o.key for o in runtime.state_store.list(layout.results_prefix("sharded"))} == live


@pytest.mark.parametrize("committed, count, largest_family", [(4, 8, 1), (2, 16, 1), (8, 2, 4), (3, 4, 3)])
def test_repartitioning_holds_one_family_of_shards_at_a_time(committed, count, largest_family):
    """Growing splits each committed shard on its own, shrinking by a divisor joins only the shards that meet;
    the shards are those of the whole result partitioned from scratch, and no split holds more than one
    family's committed shards (counts that do not divide each other are one family: the whole result)."""
    import pyarrow as pa

    from chalicelib.aggregation.partition import split_by_shard
    from chalicelib.engine import sharded
    from chalicelib.engine.runs import Run
    from chalicelib.engine.sharded import Changes, update_shards

    plan = job("j", SUBTRACTABLE, 16).plan
    rows = [{"ip": f"10.{i % 256}.{i * 7 % 256}", "revenue": Decimal(i % 13), "visits": 1, "__rows": 1}
            for i in range(2_000)]
    whole = plan.merge([pa.Table.from_pylist(rows, plan.state_schema)])
    stored = {f"s{n}": shard for n, shard in enumerate(split_by_shard(whole, plan.key_names, committed))}
    split_sizes = []

    def spying_split(table, keys, shards):
        split_sizes.append(table.num_rows)
        return split_by_shard(table, keys, shards)

    sharded_split, sharded.split_by_shard = sharded.split_by_shard, spying_split
    try:
        committed_runs = tuple((Run(key, table.num_rows),) for key, table in stored.items())
        update = update_shards(plan, count, committed_runs, stored.__getitem__, Changes([]))
    finally:
        sharded.split_by_shard = sharded_split

    expected = split_by_shard(whole, plan.key_names, count)
    assert [table.sort_by("ip").to_pylist() for table in update.tables] == \
        [table.sort_by("ip").to_pylist() for table in expected]
    assert update.rows == whole.num_rows
    biggest_family = sum(sorted((t.num_rows for t in stored.values()), reverse=True)[:largest_family])
    assert max(split_sizes) <= biggest_family
