"""The benchmark's measurements through S3 (moto on loopback): local mode end to end, the reducer's merge
rate, and a mapper's peak memory on one large object (in a child process, so its RSS is the mapper's own).

`python -m chalicelib.local.bench_system ENDPOINT KEY ETAG SIZE JOB` is that child: it maps one object of the
input bucket for one job, exactly as the Lambda handler would, and prints its peak RSS as JSON.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..aggregation.codec import decode
from ..engine import layout
from ..engine.events import ObjectEvent
from ..engine.mapper import Mapper
from ..engine.reducer import Reducer
from ..jobs import Job, JobCatalog, load_jobs
from ..runtime import utc_now
from ..storage import S3ObjectStore, make_s3_client
from .bench_data import Dataset

INPUT, STATE, REGION = "tally-input", "tally-state", "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- end to end --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndToEnd:
    files: int
    bytes: int
    seconds: float  # first upload -> every job idle
    workers: int
    jobs: tuple[str, ...]
    exact: bool  # bdb-agg-2a's served result equals DuckDB's, every group

    @property
    def mb_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def end_to_end(dataset: Dataset, workers: int, timeout: float = 1800.0) -> EndToEnd:
    """`tally demo`'s path: local mode on free ports, the CSV files uploaded by 4 threads, timed until the
    status of every job over the prefix says idle; then 2a is checked against DuckDB."""
    from ..runtime import set_runtime
    from tally.client import Tally
    from .demo import wait_until_idle
    from .referee import bdb_aggregation, differences
    from .stack import LocalOptions, LocalTally

    jobs = tuple(job.name for job in load_jobs() if job.matches("uservisits/part-00000.csv"))
    saved = dict(os.environ)
    options = LocalOptions(port=free_port(), s3_port=free_port(), workers=workers)
    try:
        with LocalTally(options) as tally:
            s3, api = tally.client(), Tally(tally.api_url)
            started = time.monotonic()
            with ThreadPoolExecutor(4) as uploads:
                pending = [uploads.submit(s3.upload_file, str(p), INPUT, f"uservisits/{p.name}")
                           for p in dataset.parts]
                idle_at = wait_until_idle(api, list(jobs), timeout, uploads_done=lambda: all(f.done() for f in pending))
            for future in pending:
                future.result()
            served = {row["key"]["sourceIP_prefix"]: row["values"]["adRevenue"] for row in api.results("bdb-agg-2a")}
            exact = not differences(bdb_aggregation(dataset.parts, 8), served)
    finally:
        set_runtime(None)
        os.environ.clear()
        os.environ.update(saved)
    size = sum(p.stat().st_size for p in dataset.parts)
    return EndToEnd(len(dataset.parts), size, idle_at - started, workers, jobs, exact)


# -- reducer -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeRate:
    label: str
    job: str
    partials: int  # objects' partials merged (markers)
    groups: int  # groups in those partials' parts
    result_groups: int
    seconds: float  # Reducer.reduce_job wall time, S3 requests on loopback included
    merge_seconds: float  # AggregationPlan.merge of the same partials, in memory
    shards: int = 1  # the job's result shards, merged in parallel threads
    into_groups: int = 0  # a warm commit: the committed result's groups the partials were merged into

    @property
    def partials_s(self) -> float:
        return self.partials / self.seconds

    @property
    def groups_s(self) -> float:
        return self.groups / self.seconds

    @property
    def merge_groups_s(self) -> float:
        return self.groups / self.merge_seconds


@contextlib.contextmanager
def _moto_server():
    """moto's S3 server in its own process, as local mode runs it: serving requests in this process would take
    the GIL from the reducer being timed. Yields the endpoint and a client with both buckets made."""
    from .stack import _start_moto

    port = free_port()
    process = _start_moto("127.0.0.1", port)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = make_s3_client(endpoint, REGION)
        for bucket in (INPUT, STATE):
            client.create_bucket(Bucket=bucket)
        yield endpoint, client
    finally:
        process.terminate()
        process.wait(timeout=10)


def _split_lines(body: bytes, pieces: int) -> list[bytes]:
    chunks, start = [], 0
    for index in range(1, pieces + 1):
        end = len(body) if index == pieces else body.index(b"\n", max(start, len(body) * index // pieces)) + 1
        chunks.append(body[start:end])
        start = end
    return [c for c in chunks if c]


def _merge_rate(s3, label: str, job: Job, objects: list[bytes]) -> MergeRate:
    """Upload and map `objects` (not timed), then time the reducer applying all their markers."""
    stores = S3ObjectStore(INPUT, s3), S3ObjectStore(STATE, s3)
    catalog = JobCatalog([job])
    mapper = Mapper(catalog, *stores, utc_now)

    def map_one(item: tuple[int, bytes]) -> None:
        key = f"{job.prefix}{label}-{item[0]:05d}.csv"
        etag = stores[0].put(key, item[1])
        mapper.map_object(ObjectEvent(INPUT, key, etag, len(item[1])))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(map_one, enumerate(objects)))
    groups = sum(p.num_rows for p in _partials(stores[1], job))
    # shard_groups=1: the job's full shard count from the first commit, the sharded path being what is measured
    # (by default a result this small stays in one shard).
    reducer = Reducer(JobCatalog([job]), stores[1], stores[0], utc_now, batch=max(500, len(objects)),
                      shard_groups=1)
    partials = _partials(stores[1], job)
    started = time.perf_counter()
    job.plan.merge(partials)
    merge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = reducer.reduce_job(job)
    seconds = time.perf_counter() - started
    if report.merged != len(objects):
        raise RuntimeError(f"reducer merged {report.merged} of {len(objects)} partials: {report}")
    shards = len(reducer.read_manifest(job)[0].shards)
    return MergeRate(label, job.name, len(objects), groups, report.rows, seconds, merge_seconds, shards)


def _partials(state: S3ObjectStore, job: Job) -> list:
    """Every partial (part) waiting in the job's inbox: inline in its marker, or in its parts."""
    tables = []
    for item in state.list(layout.inbox_prefix(job.name)):
        marker = json.loads(state.get(item.key)[0])
        blobs = [base64.b64decode(marker["inline"])] if "inline" in marker else [state.get(k)[0] for k in marker["parts"]]
        tables += [decode(blob, job.plan.fingerprint)[0] for blob in blobs]
    return tables


def partial_groups(state: S3ObjectStore, job: Job) -> int:
    """Groups in every partial waiting in the job's inbox (parts of one object may repeat a group)."""
    return sum(table.num_rows for table in _partials(state, job))


def merge_rates(body: bytes, small_job: Job, large_job: Job, small: int = 200, large: int = 4) -> list[MergeRate]:
    """`small` partials of ~8 KB objects (kept inline in their markers), and `large` partials from `body`
    cut in `large` objects (2c: about one group per row), merged by `large_job` as it is sharded and, for
    comparison, by the same job kept in one shard."""
    unsharded = large_job.model_copy(update={"name": f"{large_job.name}-unsharded", "shards": 1})
    with _moto_server() as (_, client):
        head = body[: body.index(b"\n", min(len(body) - 1, small * 8192)) + 1]
        return [_merge_rate(client, "small", small_job, _split_lines(head, small)),
                _merge_rate(client, "large", large_job, _split_lines(body, large)),
                _merge_rate(client, "large-unsharded", unsharded, _split_lines(body, large))]


def warm_commit(body: bytes, job: Job, copies: int = 10) -> MergeRate:
    """One object's partial committed into a result of millions of groups, as a reducer run meets it once a
    result has grown: `copies` of `body`, each line's sourceIP prefixed with the copy's number (distinct
    groups, 2c's keys staying nearly distinct), are mapped and committed first (not timed); then one more copy
    is mapped, and the commit applying its partial is timed. The job keeps its default shard growth."""
    with _moto_server() as (_, client):
        stores = S3ObjectStore(INPUT, client), S3ObjectStore(STATE, client)
        mapper = Mapper(JobCatalog([job]), *stores, utc_now)
        reducer = Reducer(JobCatalog([job]), stores[1], stores[0], utc_now)

        def map_copy(number: int) -> None:
            prefix = f"{number}.".encode()
            key = f"{job.prefix}warm-{number:03d}.csv"
            copy = prefix + body.rstrip(b"\n").replace(b"\n", b"\n" + prefix) + b"\n"
            mapper.map_object(ObjectEvent(INPUT, key, stores[0].put(key, copy), len(copy)))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(map_copy, range(copies)))
        while reducer.reduce_job(job).more_pending:
            pass
        map_copy(copies)
        added = pa.concat_tables([job.plan.empty(), *_partials(stores[1], job)])  # its parts
        manifest, _ = reducer.read_manifest(job)
        committed = reducer.read_result(job, manifest)
        started = time.perf_counter()
        job.plan.merge([committed, added])
        merge_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = reducer.reduce_job(job)
        seconds = time.perf_counter() - started
        shards = len(reducer.read_manifest(job)[0].shards)
    return MergeRate("warm commit", job.name, report.merged, added.num_rows, report.rows, seconds, merge_seconds,
                     shards, committed.num_rows)


# -- mapper memory -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeakMemory:
    job: str
    object_bytes: int
    peak_mib: float  # VmHWM of the child process
    baseline_mib: float  # its RSS after imports, before mapping
    seconds: float
    groups: int


def mapper_peak_memory(path: Path, jobs: list[str]) -> list[PeakMemory]:
    """Upload `path` to moto's server (its own process) and map it for each job in a fresh child process."""
    with _moto_server() as (endpoint, s3):
        key = f"uservisits/{path.name}"
        s3.upload_file(str(path), INPUT, key)
        head = s3.head_object(Bucket=INPUT, Key=key)
        results = []
        for job in jobs:
            done = subprocess.run([sys.executable, "-m", __name__, endpoint, key, head["ETag"].strip('"'),
                                   str(head["ContentLength"]), job], capture_output=True, text=True, check=True)
            results.append(PeakMemory(**json.loads(done.stdout.strip().splitlines()[-1])))
        return results


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _map_in_child(endpoint: str, key: str, etag: str, size: int, job_name: str) -> dict:
    client = make_s3_client(endpoint, REGION)
    job = load_jobs().get(job_name)
    mapper = Mapper(JobCatalog([job]), S3ObjectStore(INPUT, client), S3ObjectStore(STATE, client), utc_now)
    baseline = _status_mib("VmRSS")
    started = time.perf_counter()
    (outcome,) = mapper.map_object(ObjectEvent(INPUT, key, etag, size))
    seconds, peak = time.perf_counter() - started, _status_mib("VmHWM")
    if outcome.outcome != "mapped":
        raise RuntimeError(f"{job_name}: {outcome}")
    # Counted after the peak was read: the outcome's groups are the last part's, spilled parts are not in it.
    groups = partial_groups(S3ObjectStore(STATE, client), job)
    return {"job": job_name, "object_bytes": size, "peak_mib": peak, "baseline_mib": baseline,
            "seconds": seconds, "groups": groups}


if __name__ == "__main__":
    endpoint_arg, key_arg, etag_arg, size_arg, job_arg = sys.argv[1:6]
    print(json.dumps(_map_in_child(endpoint_arg, key_arg, etag_arg, int(size_arg), job_arg)))
