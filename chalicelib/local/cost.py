"""What a batch over a dataset would cost on AWS Lambda, from measured speeds. Pure arithmetic, no I/O.

The model: the dataset is split into objects; each object is one mapper invocation (S3 sends one event per
object), running the measured single-thread map kernel on its share of a vCPU, unless the mapper's S3 reads
(`s3_streams` ranged GETs in flight, see formats/prefetch.py) are slower than that. At most `concurrency`
mappers run at once, in waves. One reducer then merges every partial at the measured merge rate, in runs of at
most `reduce_batch` partials and `reduce_max_groups` groups. Billed: Lambda GB-seconds and invocations, S3
GETs and PUTs.

Prices: AWS Lambda pricing (aws.amazon.com/lambda/pricing) and Amazon S3 pricing (aws.amazon.com/s3/pricing),
us-east-1, x86, as stated in FIELD-NOTES.md on 2026-11-27 (unchanged since 2023): $0.0000166667 per GB-second,
$0.20 per million requests; S3 Standard $0.005 per 1,000 PUT/COPY/POST/LIST, $0.0004 per 1,000 GET.
A function with 1,769 MB of memory has one full vCPU (Lambda's documented memory-to-CPU mapping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..engine.reducer import MAX_GROUPS_PER_RUN
from ..formats.prefetch import AHEAD, CHUNK_BYTES

LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6
SEED_DATASET_BYTES = 126.8e9  # the seed's Big Data Benchmark run (uservisits, 5nodes)

# BigLambda's published times and costs on that dataset (the seed's table): seconds, US dollars.
BIGLAMBDA = {"1a": (39.0, 0.00477), "1b": (47.0, 0.0055), "2a": (200.0, 0.1129)}


@dataclass(frozen=True)
class Pricing:
    lambda_gb_second: float = 0.0000166667
    lambda_request: float = 0.20 / 1_000_000
    s3_get: float = 0.0004 / 1000
    s3_put: float = 0.005 / 1000  # also LIST


@dataclass(frozen=True)
class Deployment:
    dataset_bytes: float = SEED_DATASET_BYTES
    object_bytes: float = 256e6  # one mapper invocation per object
    concurrency: int = 1000
    mapper_memory_mb: int = LAMBDA_MB_PER_VCPU
    reducer_memory_mb: int = 3008
    # One GET stream gives a Lambda roughly 50-90 MB/s (FIELD-NOTES); the mapper keeps `s3_streams` ranged GETs
    # in flight on a big object. None: CPU-bound.
    s3_stream_mb_s: float | None = 70.0
    s3_streams: int = AHEAD
    invocation_overhead_s: float = 0.5  # per mapper: HEAD/GET latency, writing the partial and its marker
    max_groups_per_part: int = 500_000  # the mapper's spill threshold (Settings.map_max_groups)
    reduce_batch: int = 500  # partials per reducer run (Settings.reduce_batch)
    reduce_max_groups: int = MAX_GROUPS_PER_RUN  # and groups of partials per run


@dataclass(frozen=True)
class Measured:
    """What the benchmark measured for one query."""

    kernel_mb_s: float  # map kernel, MB (1e6 bytes) of input per second on one core
    groups_per_object: float  # groups in one object's partial (a scan: its output rows)
    merge_groups_s: float  # reducer, groups of partials merged per second
    scan: bool = False  # a map-only job: the reducer records output files and never reads their rows


@dataclass(frozen=True)
class Estimate:
    objects: int
    waves: int
    mapper_seconds: float  # one invocation
    map_gb_seconds: float
    reduce_seconds: float
    reduce_gb_seconds: float
    lambda_requests: int
    s3_gets: int
    s3_puts: int
    compute_usd: float
    requests_usd: float
    wall_seconds: float

    @property
    def gb_seconds(self) -> float:
        return self.map_gb_seconds + self.reduce_gb_seconds

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.requests_usd


def vcpus(memory_mb: int) -> float:
    return min(memory_mb / LAMBDA_MB_PER_VCPU, LAMBDA_MAX_VCPUS)


def estimate(measured: Measured, deployment: Deployment = Deployment(), pricing: Pricing = Pricing()) -> Estimate:
    d = deployment
    objects = math.ceil(d.dataset_bytes / d.object_bytes)
    waves = math.ceil(objects / d.concurrency)
    # The kernel is one thread: more than one vCPU does not make it faster, less makes it slower.
    rate = measured.kernel_mb_s * 1e6 * min(1.0, vcpus(d.mapper_memory_mb))
    if d.s3_stream_mb_s is not None:
        rate = min(rate, d.s3_stream_mb_s * d.s3_streams * 1e6)
    mapper_seconds = d.object_bytes / rate + d.invocation_overhead_s
    # The last object may be short: bill the dataset's bytes, not objects x object size.
    map_gb_seconds = (d.dataset_bytes / rate + objects * d.invocation_overhead_s) * d.mapper_memory_mb / 1024

    groups = 0 if measured.scan else objects * measured.groups_per_object
    reduce_seconds = groups / measured.merge_groups_s
    reduce_gb_seconds = reduce_seconds * d.reducer_memory_mb / 1024
    reducer_runs = max(math.ceil(objects / d.reduce_batch), math.ceil(groups / d.reduce_max_groups))

    parts = max(1, math.ceil(measured.groups_per_object / d.max_groups_per_part))
    # Mapper: LIST earlier attempts and PUT its own (engine/attempts.py), GET the object (a big one in chunks); PUT
    # its parts and its marker. Reducer: GET each marker and part; per run LIST the inbox and the input keys, PUT
    # result, ledger and manifest (deletes are free).
    chunks = max(1, math.ceil(d.object_bytes / CHUNK_BYTES)) if d.object_bytes > 2 * CHUNK_BYTES else 1
    s3_gets = objects * (chunks + 1 + parts)
    s3_puts = objects * (2 + parts + 1) + reducer_runs * (2 + 3)
    lambda_requests = objects + reducer_runs
    compute_usd = (map_gb_seconds + reduce_gb_seconds) * pricing.lambda_gb_second
    requests_usd = lambda_requests * pricing.lambda_request + s3_gets * pricing.s3_get + s3_puts * pricing.s3_put
    return Estimate(objects, waves, mapper_seconds, map_gb_seconds, reduce_seconds, reduce_gb_seconds,
                    lambda_requests, s3_gets, s3_puts, compute_usd, requests_usd,
                    wall_seconds=waves * mapper_seconds + reduce_seconds)


def implied_mb_s(usd: float, deployment: Deployment = Deployment(), pricing: Pricing = Pricing()) -> float:
    """The per-Lambda MB/s at which compute alone would cost `usd` (how fast BigLambda's mappers were)."""
    gb_seconds = usd / pricing.lambda_gb_second
    lambda_seconds = gb_seconds / (deployment.mapper_memory_mb / 1024)
    return deployment.dataset_bytes / lambda_seconds / 1e6
