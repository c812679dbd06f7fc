"""The processes the scale benchmark (issue 16, bench_scale.py) measures, one per step, so that each one's
peak RSS is its own and moto's (a server process of its own) is nobody's:

    python -m chalicelib.local.bench_scale_child build  ENDPOINT JOB GROUPS BATCH SETTLE_KEY NEXT_KEY
    python -m chalicelib.local.bench_scale_child commit ENDPOINT JOB WARM_KEY
    python -m chalicelib.local.bench_scale_child page   ENDPOINT JOB ORDER

Each prints one JSON object as its last line. They reach the state only through the engine's seams (the mapper's
part writer and markers, Reducer.reduce_job, the API's results route), never through its object layout, so they
measure whatever layout the engine writes: the sharded results of today, or immutable runs after the rewrite.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine import layout
from ..engine.events import ObjectEvent
# The mapper's own part writer: the synthetic partials land as the mapper lands them (parts, then the marker
# naming them), so a change of the marker's fields or of the part keys reaches the benchmark too.
from ..engine.mapper import Mapper, _PartWriter
from ..engine.reducer import Reducer
from ..jobs import Job, JobCatalog, load_jobs
from ..runtime import Runtime, utc_now
from ..settings import Settings
from ..storage import ObjectStore, S3ObjectStore, make_s3_client

INPUT, STATE, REGION = "tally-input", "tally-state", "us-east-1"
# Groups of one synthetic object: a mapper's part holds at most this many (Settings.map_max_groups), so each
# synthetic object is one part, as a mapper would write an object of ~90 MB of 2c's input.
PART_GROUPS = 500_000
PAGE_LIMIT = 1000
ORDERS = ("key", "aggregate desc")


# -- the synthetic result ----------------------------------------------------------------------------------

def synthetic_keys(start: int, stop: int) -> pa.Array:
    """Distinct sourceIP-like keys 'ddd.ddd.ddd' for the numbers start..stop-1 (up to 10^9). Eleven characters,
    so 2c's SUBSTR(sourceIP, 1, 12) keeps them whole and distinct; and never a generated IP, which has three dots."""
    numbers = np.arange(start, stop, dtype=np.int64)
    octets = [pc.utf8_lpad(pc.cast(pa.array(numbers // 1000 ** power % 1000), pa.string()), width=3, padding="0")
              for power in (2, 1, 0)]
    return pc.binary_join_element_wise(*octets, ".")


def synthetic_rows(job: Job, start: int, stop: int, seed: int) -> pa.Table:
    """Input rows (sourceIP, adRevenue in the job's declared types) of the groups start..stop-1, one row each."""
    if set(job.plan.columns) != {"sourceIP", "adRevenue"}:
        raise ValueError(f"{job.name} reads {sorted(job.plan.columns)}: the synthetic rows are 2c's columns")
    micros = np.random.default_rng([seed, start]).integers(1, 1_000_000_000, size=stop - start)
    # A decimal128's value is a 16-byte little-endian integer of millionths here: the low word, then zero.
    words = np.zeros((stop - start, 2), dtype=np.int64)
    words[:, 0] = micros
    revenue = pa.Array.from_buffers(pa.decimal128(18, 6), stop - start, [None, pa.py_buffer(words)])
    types = {"sourceIP": pa.string(), "adRevenue": pa.decimal128(18, 6)}
    declared = {name: job.format.columns[name] for name in types}
    if declared != {"sourceIP": "string", "adRevenue": "decimal(18,6)"}:
        raise ValueError(f"{job.name} declares {declared}: the synthetic rows are 2c's types")
    return pa.table({"sourceIP": synthetic_keys(start, stop), "adRevenue": revenue}, pa.schema(types))


def write_synthetic_object(input_store: ObjectStore, state: ObjectStore, job: Job, index: int, start: int,
                           stop: int, seed: int) -> None:
    """One input object (a placeholder: the reducer compares only its key and ETag with the bucket's) and the
    partial of groups start..stop-1 under it, as the mapper hands a partial over: its part, then its marker."""
    key = f"{job.prefix}scale/{index:06d}.csv"
    body = f"synthetic groups {start}..{stop - 1}\n".encode()
    etag = input_store.put(key, body)
    rows = synthetic_rows(job, start, stop, seed)
    partial = job.plan.lift_rows(rows) if job.plan.lifts_rows else job.plan.lift(rows)
    contribution, attempt = layout.contribution_id(key, etag), layout.new_attempt()
    writer = _PartWriter(state, job, contribution, attempt, layout.version_marker(contribution, attempt))
    summary = {"key": key, "etag": etag, "version_id": None, "sequencer": None, "size": len(body),
               "event_time": None, "bytes_read": len(body), "rows": rows.num_rows, "bad_rows": 0,
               "bad_row_examples": [], "mapped_at": utc_now().isoformat()}
    writer.commit(partial, summary, inline_limit=-1)  # -1: in a part, as a partial of this size always is


def build_result(input_store: ObjectStore, state: ObjectStore, job: Job, groups: int, batch: int,
                 seed: int = 42) -> Reducer:
    """A result of `groups` distinct groups, committed by Reducer.reduce_job in runs of at most `batch` groups
    (its max_groups) until nothing is pending, then compacted as reduce_all would. Returns that (warm) reducer."""
    spans = [(index, start, min(groups, start + PART_GROUPS)) for index, start in enumerate(range(0, groups,
                                                                                                   PART_GROUPS))]
    with ThreadPoolExecutor(2) as pool:  # Arrow's encode and the PUTs release the GIL
        list(pool.map(lambda span: write_synthetic_object(input_store, state, job, *span, seed), spans))
    reducer = Reducer(JobCatalog([job]), state, input_store, utc_now, max_groups=batch)
    while reducer.reduce_job(job).more_pending:
        pass
    while reducer.compact(job):  # as the scheduled reducer leaves a result once its inbox is drained
        pass
    return reducer


# -- the steps ---------------------------------------------------------------------------------------------

def _stores(endpoint: str) -> tuple[S3ObjectStore, S3ObjectStore]:
    client = make_s3_client(endpoint, REGION)
    return S3ObjectStore(INPUT, client), S3ObjectStore(STATE, client)


def _event(input_store: ObjectStore, key: str) -> ObjectEvent:
    head = input_store.head(key)
    return ObjectEvent(INPUT, key, head.etag, head.size)


def _map(mapper: Mapper, input_store: ObjectStore, key: str) -> int:
    """Map one input object for the job; the groups of its partial."""
    (outcome,) = mapper.map_object(_event(input_store, key))
    if outcome.outcome != "mapped":
        raise RuntimeError(f"{key}: {outcome}")
    return outcome.groups


def _reduce_one(reducer: Reducer, job: Job) -> None:
    report = reducer.reduce_job(job)
    if report.merged != 1 or report.errors:
        raise RuntimeError(f"expected one partial committed: {report}")


def build(endpoint: str, job: Job, groups: int, batch: int, settle_key: str, next_key: str) -> dict:
    """The result of `groups` groups, read back through the engine; then one real object committed into it
    (not timed: a result that just crossed a shard threshold re-partitions on its next commit, which the timed
    commit should not be), and the next real object mapped, its marker left in the inbox for `commit`."""
    input_store, state = _stores(endpoint)
    started = time.perf_counter()
    reducer = build_result(input_store, state, job, groups, batch)
    seconds = time.perf_counter() - started
    manifest, _ = reducer.read_manifest(job)
    result = reducer.read_result(job, manifest)
    keys = result.column(job.plan.key_names[0])
    read_back, distinct = result.num_rows, pc.count_distinct(keys).as_py()
    del result, keys
    mapper = Mapper(JobCatalog([job]), input_store, state, utc_now)
    _map(mapper, input_store, settle_key)
    _reduce_one(reducer, job)
    next_groups = _map(mapper, input_store, next_key)
    return {"seconds": seconds, "read_back": read_back, "distinct": distinct, "next_groups": next_groups}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _cpu_seconds() -> float:
    """This process's CPU time, every thread's: steadier than wall time on a machine other work shares."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def commit(endpoint: str, job: Job, warm_key: str) -> dict:
    """The reducer as a fresh Lambda container runs it (Runtime from Settings): the commit of the partial
    waiting in the inbox, timed; then one more object mapped here and its commit timed, by the now warm reducer.
    The peak RSS is read after the first commit, before the mapping can add to it."""
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, s3_endpoint=endpoint),
                      catalog=JobCatalog([job]))
    reducer, baseline, cpu = runtime.reducer, _peak_mib(), _cpu_seconds()
    seconds = _timed(lambda: _reduce_one(reducer, job))
    cpu_seconds, peak, shards = _cpu_seconds() - cpu, _peak_mib(), _shards(reducer, job)
    warm_groups = _map(runtime.mapper, runtime.input_store, warm_key)
    warm_seconds = _timed(lambda: _reduce_one(reducer, job))
    manifest, _ = reducer.read_manifest(job)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak, "baseline_mib": baseline,
            "shards": shards,
            "warm_seconds": warm_seconds, "warm_groups": warm_groups, "warm_peak_mib": _peak_mib(),
            "warm_shards": _shards(reducer, job), "result_groups": manifest.rows}


def _shards(reducer: Reducer, job: Job) -> int | None:
    """The result's shards as the manifest names them: a commit that changes their count re-partitioned it,
    which costs more than a commit in place (a sharded result doubles its shards as it crosses a size)."""
    manifest, _ = reducer.read_manifest(job)
    return None if manifest is None else len(manifest.shards)


def page_query(job: Job, order: str) -> dict[str, str]:
    """The query string of the first page of `order` (ORDERS): by key, or by the first aggregate descending."""
    if order == "key":
        return {"limit": str(PAGE_LIMIT)}
    return {"limit": str(PAGE_LIMIT), "order_by": next(iter(job.aggregates)), "desc": "true"}


def page(job: Job, order: str) -> dict:
    """The first page through the API Lambda's own handler (app.py's route, called as chalice.test.Client
    calls it), in a process whose TALLY_* environment (set by the parent) names the moto server. Cold: the
    first request once the runtime is built (a container's first after its init); warm: the same again."""
    import app
    from chalice.test import Client

    from ..runtime import get_runtime

    get_runtime().jobs.get(job.name)  # the container's init: settings, S3 client, job catalog
    query = "&".join(f"{name}={value}" for name, value in page_query(job, order).items())
    baseline = _peak_mib()
    bodies = []
    with Client(app.app) as client:
        def get() -> None:
            response = client.http.get(f"/jobs/{job.name}/results?{query}")
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.body[:500]!r}")
            bodies.append(json.loads(response.body))

        cold, warm = _timed(get), _timed(get)
    if bodies[0]["rows"] != bodies[1]["rows"]:
        raise RuntimeError("the warm page differs from the cold one")
    return {"order": order, "cold_seconds": cold, "warm_seconds": warm, "peak_mib": _peak_mib(),
            "baseline_mib": baseline, "rows": len(bodies[1]["rows"]), "total_rows": bodies[1]["total_rows"]}


def main(argv: list[str]) -> dict:
    step, endpoint, job_name, *rest = argv
    job = load_jobs().get(job_name)
    if step == "build":
        groups, batch, settle_key, next_key = rest
        return build(endpoint, job, int(groups), int(batch), settle_key, next_key)
    if step == "commit":
        return commit(endpoint, job, *rest)
    if step == "page":
        return page(job, *rest)
    raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
