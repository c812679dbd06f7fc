"""Nothing is deleted on stale information (docs/deletion.md). Each hole a review found, reproduced with Tally's
own Reducer, Mapper and Reconciler on moto, and what holds now: given these runs interleaved so, the result is
the query over the bucket, and every object the committed state names exists."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from chalicelib.engine import layout
from chalicelib.engine.reconcile import Reconciler
from chalicelib.engine.reducer import Reducer, ReduceReport
from chalicelib.errors import CommitConflict
from chalicelib.runtime import utc_now

from .conftest import INPUT, collect_garbage, query_over_bucket, uservisits_rows
from .faults import Before, LostResponse

JOB = "bdb-agg-2a"
KEY = "uservisits/k.csv"
E1_ROWS = [(f"1.1.1.{i}", "1") for i in range(40)]       # 40 rows of one group: 40
E2_ROWS = [("2.2.2.2", "5")]


def served(runtime) -> dict[str, Decimal]:
    _, table = runtime.results.current(runtime.jobs.get(JOB))
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


def committed_objects_exist(runtime) -> bool:
    live = runtime.reducer.read_live(runtime.jobs.get(JOB))
    return all(runtime.state_store.head(key) is not None for key in live.keys)


def in_parts(runtime) -> None:
    """Partials stored as parts, spilled several to an object, as a high-cardinality object's are."""
    runtime.mapper.inline_limit, runtime.mapper.max_groups, runtime.mapper.block_size = 0, 8, 512


# -- 1. an overlapping reducer that commits nothing ---------------------------------------------------------------

def test_a_reducer_that_finds_a_version_stale_does_not_delete_the_parts_an_overlapping_one_commits(
        runtime, uploads, s3):
    """A gathers k@E1 and reads its parts; k is overwritten; B finds k@E1 stale and commits nothing; A commits
    k@E1 live. E2's event must then retract it: its parts are still there."""
    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    runtime.mapper.handle(uploads.event(uploads.put(KEY, uservisits_rows(*E1_ROWS))))
    e2 = {}

    def overwrite_then_run_b():
        e2["record"] = uploads.put(KEY, uservisits_rows(*E2_ROWS))  # its event is still on its way
        b = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now)
        assert not b.reduce_job(job).merged  # stale: nothing to commit, and it cleans up after itself

    a = Reducer(runtime.jobs, Before(runtime.state_store, overwrite_then_run_b, operation="put_if_absent"),
                runtime.input_store, utc_now)
    assert a.reduce_job(job).merged == 1  # A read the parts before B ran, and commits k@E1
    runtime.mapper.handle(uploads.event(e2["record"]))
    runtime.reducer.reduce_job(job)  # retracts k@E1: this failed, every run, when B had deleted its parts

    assert served(runtime) == query_over_bucket(s3) == {"2.2.2.2": Decimal(5)}
    assert runtime.status.status(job)["idle"] is True and committed_objects_exist(runtime)
    collect_garbage(runtime, JOB)
    assert committed_objects_exist(runtime)
    assert {layout.contribution_of_part(o.key) for o in runtime.state_store.list(layout.parts_prefix(JOB))} == {
        e["contribution"] for e in runtime.reducer.read_committed(job)[1].to_pylist()}


def test_the_sweep_does_not_delete_old_parts_a_reducer_is_about_to_commit(runtime, uploads, s3, s3_clock):
    """The parts of k@E1 are two hours old; A has read its marker; B drops the marker as stale; the reconcile runs
    now. The parts look orphaned (old, not live, no marker), but B's garbage record is young: they stay, and
    A's commit can be retracted later."""
    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    s3_clock.offset = -dt.timedelta(hours=2)
    runtime.mapper.handle(uploads.event(uploads.put(KEY, uservisits_rows(*E1_ROWS))))
    s3_clock.offset = dt.timedelta(0)
    e2 = {}

    def overwrite_run_b_and_reconcile():
        e2["record"] = uploads.put(KEY, uservisits_rows(*E2_ROWS))
        Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now).reduce_job(job)
        runtime.reconciler.reconcile(job)  # the event of E2 is young: left to itself; then the sweep

    a = Reducer(runtime.jobs, Before(runtime.state_store, overwrite_run_b_and_reconcile, operation="put_if_absent"),
                runtime.input_store, utc_now)
    assert a.reduce_job(job).merged == 1
    runtime.mapper.handle(uploads.event(e2["record"]))
    runtime.reducer.reduce_job(job)

    assert served(runtime) == query_over_bucket(s3) and committed_objects_exist(runtime)


def test_the_sweep_reads_the_ledger_after_the_inbox_so_a_marker_applied_meanwhile_keeps_its_parts(
        runtime, uploads, s3, s3_clock):
    """A reducer applies k's marker (commits, then deletes the marker) while the reconcile runs: between its
    reads. Whatever it read first, the parts it then finds live must not be swept."""
    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    s3_clock.offset = -dt.timedelta(hours=2)  # mapped long ago: the parts are old, their marker waits
    runtime.mapper.handle(uploads.event(uploads.put(KEY, uservisits_rows(*E1_ROWS))))
    s3_clock.offset = dt.timedelta(0)
    reducer_runs = Before(runtime.state_store, lambda: runtime.reducer.reduce_job(job), operation="list",
                          key_contains="/inbox/")
    Reconciler(runtime.jobs, runtime.input_store, reducer_runs, runtime.mapper, runtime.reducer, utc_now
               ).reconcile(job)

    assert reducer_runs.fired and served(runtime) == query_over_bucket(s3)
    runtime.mapper.handle(uploads.event(uploads.delete(KEY)))
    runtime.reducer.reduce_job(job)  # the retraction reads the parts
    assert served(runtime) == {} and committed_objects_exist(runtime)


def test_a_duplicate_delivery_superseded_mid_read_deletes_only_its_own_parts(lambdas, runtime, uploads, s3):
    """k@E1 is live, its partial in parts. Its event comes again; while that mapper reads, k is overwritten:
    the read meets a 412 and the attempt deletes what it spilled. Those are its own parts, not the live
    version's (which depended only on the version, before)."""
    in_parts(runtime)
    runtime.mapper.prefetch_chunk = 400  # several ranged GETs, pinned to E1's ETag
    job = runtime.jobs.get(JOB)
    first = uploads.put(KEY, uservisits_rows(*[(f"1.1.{i % 50}.{i}", "1") for i in range(400)]))  # ~90 GETs
    runtime.mapper.handle(uploads.event(first))
    runtime.reducer.reduce_job(job)
    live_parts = runtime.reducer.read_committed(job)[1].to_pylist()[0]["parts"]
    fetch, overwritten, ranged = runtime.input_store.open, {}, []

    def overwrite_once_parts_are_spilled(key, **kwargs):
        ranged.append(kwargs.get("byte_range"))
        if len(ranged) == 60 and not overwritten:  # two thirds in: several parts spilled
            overwritten["record"] = uploads.put(KEY, uservisits_rows(*E2_ROWS))
        return fetch(key, **kwargs)

    runtime.input_store.open = overwrite_once_parts_are_spilled
    outcomes = runtime.mapper.handle(uploads.event(first))  # the duplicate
    runtime.input_store.open = fetch

    assert "record" in overwritten and {o.outcome for o in outcomes} == {"superseded"}
    assert all(runtime.state_store.head(part) for part in live_parts)
    runtime.mapper.handle(uploads.event(overwritten["record"]))
    runtime.reducer.reduce_job(job)
    assert served(runtime) == query_over_bucket(s3) == {"2.2.2.2": Decimal(5)}


# -- 2. a lost response on the manifest write ---------------------------------------------------------------------

FILES = {"uservisits/a.csv": [("1.1.1.1", "1.25")], "uservisits/b.csv": [("3.3.3.3", "3")]}


def map_files(runtime, uploads, files) -> None:
    for key, rows in files.items():
        runtime.mapper.handle(uploads.event(uploads.put(key, uservisits_rows(*rows))))


@pytest.mark.parametrize("first_commit", [True, False], ids=["if-none-match", "if-match"])
def test_a_commit_whose_response_was_lost_is_read_back_and_kept(runtime, uploads, s3, first_commit):
    job = runtime.jobs.get(JOB)
    if not first_commit:
        map_files(runtime, uploads, {"uservisits/z.csv": [("9.9.9.9", "9")]})
        runtime.reducer.reduce_job(job)
    map_files(runtime, uploads, FILES)
    operation = "put_if_absent" if first_commit else "put_if_match"
    lossy = LostResponse(runtime.state_store, operation, key_contains="manifest.json")

    report = Reducer(runtime.jobs, lossy, runtime.input_store, utc_now).reduce_job(job)

    assert lossy.lost == 1 and report.merged == 2 and not report.conflict
    assert committed_objects_exist(runtime)  # the shards, ledger and pack the manifest names were kept
    assert runtime.status.status(job)["idle"] is True
    assert served(runtime) == query_over_bucket(s3)
    map_files(runtime, uploads, {"uservisits/c.csv": [("1.1.1.1", "2")]})
    assert runtime.reducer.reduce_job(job).merged == 1 and served(runtime) == query_over_bucket(s3)
    runtime.reconciler.reconcile(job, grace=dt.timedelta(0))  # read_committed works again


def test_a_commit_that_certainly_lost_deletes_its_own_objects_at_once(runtime, uploads, s3):
    """Another run's manifest holds our generation: ours never applied, and nothing can name our objects."""
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, FILES)
    loser = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now)
    seen = loser.gather(job)
    runtime.reducer.reduce_job(job)  # the winner, at the same generation
    before = {o.key for prefix in ("results/", "ledger/", "packs/", "garbage/")
              for o in runtime.state_store.list(f"jobs/{JOB}/{prefix}")}

    with pytest.raises(CommitConflict):
        loser.execute(job, seen, seen.plan(), ReduceReport(JOB))

    after = {o.key for prefix in ("results/", "ledger/", "packs/", "garbage/")
             for o in runtime.state_store.list(f"jobs/{JOB}/{prefix}")}
    assert after == before and committed_objects_exist(runtime) and served(runtime) == query_over_bucket(s3)


# -- 5. versioned buckets ----------------------------------------------------------------------------------------

@pytest.fixture
def versioned(runtime, s3):
    s3.put_bucket_versioning(Bucket=INPUT, VersioningConfiguration={"Status": "Enabled"})
    return runtime


def test_in_a_versioned_bucket_the_reconcile_and_the_mapper_name_a_version_alike(versioned, uploads, s3):
    runtime, job = versioned, versioned.jobs.get(JOB)
    bad = uploads.put("uservisits/bad.csv", "garbage\n")
    good = uploads.put("uservisits/good.csv", uservisits_rows(("1.1.1.1", "1")))
    assert bad["s3"]["object"]["versionId"]
    runtime.mapper.handle(uploads.event(bad, good))  # quarantined; mapped, its marker waiting

    report = runtime.reconciler.reconcile(job, grace=dt.timedelta(0))

    assert report.mapped == []  # neither the quarantined version nor the one in the inbox is mapped again
    runtime.reducer.reduce_job(job)
    again = uploads.put("uservisits/good.csv", uservisits_rows(("1.1.1.1", "1")))  # same bytes, a new version
    runtime.mapper.handle(uploads.event(again, uploads.delete("uservisits/bad.csv")))
    runtime.reducer.reduce_job(job)
    assert served(runtime) == query_over_bucket(s3) == {"1.1.1.1": Decimal(1)}
    assert runtime.status.status(job)["idle"] is True
    assert runtime.reconciler.reconcile(job, grace=dt.timedelta(0)).mapped == []


# -- a missing partial the live result needs: an error, and a repair ---------------------------------------------

def test_a_lost_live_partial_is_an_error_and_the_next_runs_repair_the_result(runtime, uploads, s3):
    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, {KEY: E1_ROWS, "uservisits/other.csv": [("3.3.3.3", "3")]})
    runtime.reducer.reduce_job(job)
    [entry] = [e for e in runtime.reducer.read_committed(job)[1].to_pylist() if e["key"] == KEY]
    runtime.state_store.delete(entry["parts"][:1])  # lost from outside: by hand, a lifecycle rule, a bug
    runtime.mapper.handle(uploads.event(uploads.put(KEY, uservisits_rows(*E2_ROWS))))

    [report] = [r for r in runtime.reducer.reduce_all() if r.job == JOB]

    assert report.missing == 1 and "StateMissing" in report.errors[0] and entry["parts"][0] in report.errors[0]
    assert [layout.id_of(k) for k in (o.key for o in runtime.state_store.list(layout.inbox_prefix(JOB)))
            if layout.id_of(k).startswith("repair.")]
    report = runtime.reducer.reduce_job(job)  # drops the lost version, rebuilds, adds E2
    assert report.repaired == 1 and served(runtime) == query_over_bucket(s3)
    assert runtime.status.status(job)["idle"] is True and committed_objects_exist(runtime)


def test_the_reconcile_finds_a_lost_partial_and_the_current_version_is_mapped_again(runtime, uploads, s3):
    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, {KEY: E1_ROWS})
    runtime.reducer.reduce_job(job)
    [entry] = runtime.reducer.read_committed(job)[1].to_pylist()
    runtime.state_store.delete(entry["parts"][-1:])

    report = runtime.reconciler.reconcile(job, grace=dt.timedelta(0))
    assert report.lost == 1
    runtime.reducer.reduce_job(job)  # the rebuild without it
    assert served(runtime) == {}
    runtime.reconciler.reconcile(job, grace=dt.timedelta(0))  # the key's current version, mapped again
    runtime.reducer.reduce_job(job)

    assert served(runtime) == query_over_bucket(s3) and committed_objects_exist(runtime)
    runtime.mapper.handle(uploads.event(uploads.delete(KEY)))
    runtime.reducer.reduce_job(job)
    assert served(runtime) == {}


def test_tally_repair_rebuilds_without_a_lost_partial_and_maps_its_key_again(s3_server, runtime, uploads, capsys):
    from chalicelib.local.cli import main as tally

    in_parts(runtime)
    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, {KEY: E1_ROWS, "uservisits/other.csv": [("3.3.3.3", "3")]})
    runtime.reducer.reduce_job(job)
    [entry] = [e for e in runtime.reducer.read_committed(job)[1].to_pylist() if e["key"] == KEY]
    runtime.state_store.delete(entry["parts"])

    assert tally(["repair", JOB, "--s3-endpoint", s3_server.meta.endpoint_url]) == 0

    out = capsys.readouterr().out
    assert "1 live versions with lost partials" in out and "1 objects mapped again" in out
    assert served(runtime) == query_over_bucket(s3_server) and committed_objects_exist(runtime)
    runtime.mapper.handle(uploads.event(uploads.delete(KEY)))
    runtime.reducer.reduce_job(job)  # the version mapped again can be retracted
    assert served(runtime) == {"3.3.3.3": Decimal(3)}


def test_tally_repair_reset_starts_a_result_whose_ledger_is_lost_over(s3_server, runtime, uploads, capsys):
    from chalicelib.local.cli import main as tally

    job = runtime.jobs.get(JOB)
    map_files(runtime, uploads, FILES)
    runtime.reducer.reduce_job(job)
    manifest, _ = runtime.reducer.read_manifest(job)
    runtime.state_store.delete([manifest.ledger_key])
    map_files(runtime, uploads, {"uservisits/c.csv": [("1.1.1.1", "2")]})
    cold = Reducer(runtime.jobs, runtime.state_store, runtime.input_store, utc_now)  # a new Lambda container
    [report] = [r for r in cold.reduce_all() if r.job == JOB]
    assert report.missing == 1  # an error every run, until reset

    assert tally(["repair", JOB, "--reset", "--s3-endpoint", s3_server.meta.endpoint_url]) == 0

    assert "result reset" in capsys.readouterr().out
    assert served(runtime) == query_over_bucket(s3_server) and committed_objects_exist(runtime)
