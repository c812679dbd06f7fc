"""Pages read by range (engine/pages.py) are the pages of the whole read: by key, by prefix, by an aggregate
ascending and descending, with cursors through the whole result, over shards of several runs, deltas that
retract, compactions in between and `having`; and a first page by key reads a few small ranges, not the runs."""
from __future__ import annotations

import pytest

from chalicelib.aggregation import runfile
from chalicelib.engine import boards
from chalicelib.engine.results import ResultReader, ResultsQuery
from chalicelib.errors import GroupNotFound
from chalicelib.jobs import Job, JobCatalog
from chalicelib.runtime import Runtime
from chalicelib.settings import Settings
from reducers.tables import TABLES

from .conftest import INPUT, STATE, uservisits_rows
from .test_reducer import CountingStore

FORMAT = TABLES["uservisits"].format
JOB = Job(name="revenue", prefix="uservisits/", format=FORMAT, keys={"ip": "substr(sourceIP, 1, 12)"},
          aggregates={"revenue": "sum(adRevenue)", "visits": "count()", "top": "max(adRevenue)"}, shards=4)
HAVING = Job(name="busy", prefix="uservisits/", format=FORMAT, keys={"ip": "substr(sourceIP, 1, 12)"},
             aggregates={"revenue": "sum(adRevenue)", "visits": "count()"}, having="visits > 1", shards=4)
ORDERS = [{}, {"desc": "true"}, {"prefix": "10.1"}, {"prefix": "10.2", "desc": "true"}, {"order_by": "ip"},
          {"order_by": "revenue"}, {"order_by": "revenue", "desc": "true"}, {"order_by": "visits", "desc": "true"},
          {"order_by": "top"}, {"order_by": "revenue", "prefix": "10.1", "desc": "true"}]


@pytest.fixture
def runtime(s3, monkeypatch) -> Runtime:
    monkeypatch.setattr(runfile, "BLOCK_ROWS", 16)     # many blocks in a small result
    monkeypatch.setattr(boards, "BOARD_ROWS", 40)      # boards that rank part of a shard
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, shard_groups=1), s3_client=s3,
                      catalog=JobCatalog([JOB, HAVING]))
    runtime.reducer.rewrite_groups = 0  # every commit after the first appends a delta run
    return runtime


def ips(first: int, count: int, revenue: int = 1) -> list[tuple[str, str]]:
    return [(f"10.{i // 100 % 250}.{i % 100}.1", f"{revenue + i % 7}.5") for i in range(first, first + count)]


def put(runtime, uploads, key: str, rows) -> None:
    runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))
    for job in (JOB, HAVING):
        runtime.reducer.reduce_job(job)


def walk(reader: ResultReader, job: Job, params: dict, limit: int) -> list:
    seen, cursor = [], None
    while True:
        query = ResultsQuery.from_params(job, {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})})
        page = reader.page(job, query)
        seen.append((page.rows, page.next_cursor is not None))
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
        assert len(seen) < 1000


def assert_ranged_pages_are_whole_pages(runtime, limits=(30,)) -> None:
    ranged = ResultReader(runtime.reducer, whole_rows=0)
    whole = ResultReader(runtime.reducer, whole_rows=1 << 40)  # the reference: the whole result, sorted
    for job in (JOB, HAVING):
        for params in (p for p in ORDERS if p.get("order_by", "ip") in (*job.keys, *job.aggregates)):
            for limit in limits:
                assert walk(ranged, job, params, limit) == walk(whole, job, params, limit), (job.name, params, limit)


def assert_groups_are_whole_groups(runtime, absent: list[str]) -> None:
    """A single group read from the blocks that can hold it is the group the whole read finds (or neither has it):
    every served group, and groups never there or retracted to nothing (`absent`)."""
    ranged = ResultReader(runtime.reducer, whole_rows=0)
    whole = ResultReader(runtime.reducer, whole_rows=1 << 40)
    for job in (JOB, HAVING):
        served = whole.current(job)[1].column("ip").to_pylist()
        keys = [*served, *absent]
        hits = 0
        for key in keys:
            found = []
            for reader in (ranged, whole):
                try:
                    found.append(reader.group(job, key))
                except GroupNotFound:
                    found.append(None)
            assert found[0] == found[1], (job.name, key, found)
            hits += found[0] is not None
        assert hits == len(served)
        assert served or job is HAVING  # nothing has two visits left there


def test_pages_by_key_and_by_value_over_runs_deltas_retractions_and_compactions(runtime, uploads):
    put(runtime, uploads, "uservisits/a.csv", ips(0, 900) + ips(0, 300, 3))      # first commit: one run, a board
    put(runtime, uploads, "uservisits/b.csv", ips(850, 200, 5))                  # a delta over old and new groups
    assert max(len(runs) for runs in runtime.reducer.read_manifest(JOB)[0].shards) == 2
    assert_ranged_pages_are_whole_pages(runtime)

    put(runtime, uploads, "uservisits/a.csv", ips(100, 100, 50))  # overwritten: most of a's groups retracted
    put(runtime, uploads, "uservisits/c.csv", ips(2000, 30, 9))
    assert_ranged_pages_are_whole_pages(runtime)

    runtime.reducer.compact(JOB, lambda runs: (1, len(runs)) if len(runs) > 2 else None)  # not from the oldest
    runtime.reducer.compact(HAVING, lambda runs: (0, len(runs)) if len(runs) > 1 else None)  # a new board
    assert_ranged_pages_are_whole_pages(runtime, limits=(9, 100))
    assert_groups_are_whole_groups(runtime, absent=["10.0.0.1", "10.249.99.1"])  # retracted; never there


def test_a_board_that_cannot_vouch_for_a_page_falls_back_to_the_shard(runtime, uploads, monkeypatch):
    put(runtime, uploads, "uservisits/a.csv", ips(0, 800))
    put(runtime, uploads, "uservisits/b.csv", ips(0, 800, 90))  # every group changes: no board entry untouched
    calls = []
    original = boards.untouched
    monkeypatch.setattr(boards, "untouched", lambda *args: calls.append(1) or original(*args))
    assert_ranged_pages_are_whole_pages(runtime, limits=(9,))
    assert calls


def test_runs_of_the_old_format_are_read_whole_and_served_alike(runtime, uploads, monkeypatch):
    from chalicelib.engine import reducer

    monkeypatch.setattr(reducer, "encode_run", lambda table, fingerprint, keys: reducer.encode(table, fingerprint))
    put(runtime, uploads, "uservisits/a.csv", ips(0, 500))
    monkeypatch.undo()
    monkeypatch.setattr(runfile, "BLOCK_ROWS", 16)
    put(runtime, uploads, "uservisits/b.csv", ips(400, 200, 4))  # a new-format delta over an old run
    assert_ranged_pages_are_whole_pages(runtime, limits=(9,))


def test_a_first_page_by_key_reads_small_ranges_not_the_runs(runtime, uploads, monkeypatch):
    monkeypatch.setattr(runfile, "TAIL_BYTES", 2048)  # the default fits an index of thousands of blocks
    put(runtime, uploads, "uservisits/a.csv", ips(0, 5000))
    put(runtime, uploads, "uservisits/b.csv", ips(4000, 2000, 3))
    manifest = runtime.reducer.read_manifest(JOB)[0]
    stored = {o.key: o.size for o in runtime.state_store.list("jobs/revenue/results/")}
    total = sum(stored[run.key] for runs in manifest.shards for run in runs)
    runs = sum(len(shard) for shard in manifest.shards)

    counting = CountingStore(runtime.state_store)
    read, whole = [], []
    counting.get = lambda key: whole.append(key) or runtime.state_store.get(key)
    counting.get_range = lambda key, start, end: read.append(end - start) or runtime.state_store.get_range(key, start, end)
    counting.get_tail = lambda key, n: (lambda got: read.append(len(got[0])) or got)(runtime.state_store.get_tail(key, n))
    runtime.reducer.state = counting
    reader = ResultReader(runtime.reducer, whole_rows=0)
    page = reader.page(JOB, ResultsQuery.from_params(JOB, {"limit": "10"}))

    assert [row["key"]["ip"] for row in page.rows] == sorted(ip[:12] for ip, _ in ips(0, 6000))[:10]
    assert not [key for key in whole if "/results/" in key]  # no whole GET of a run: the manifest only
    assert len(read) <= 4 * runs  # a tail per run (and its index if longer), a block or two
    print(f"first page by key: {len(read)} ranged GETs, {sum(read)} bytes of {total} in {runs} runs")
    assert sum(read) < total / 4, (sum(read), total)
