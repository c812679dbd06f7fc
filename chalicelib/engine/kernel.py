"""The map kernel without S3: one object's bytes through one or more jobs, in memory. For benchmarks and
tests that measure or check the computation alone; the mapper runs the same readers, plans and accumulators,
adding storage and markers around them."""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import IO, Sequence

import pyarrow as pa

from ..formats import BLOCK_SIZE, ReadStats, batches
from ..jobs import Job
from .mapper import PartialAccumulator


@dataclass(frozen=True)
class KernelOutput:
    tables: dict[str, pa.Table]  # job name -> its partial (aggregation) or its output rows (scan)
    stats: ReadStats


def map_object_bytes(jobs: Sequence[Job], data: bytes | IO[bytes], key: str,
                     block_size: int = BLOCK_SIZE, max_groups: int = 500_000) -> KernelOutput:
    """Map one object's bytes (or a readable, and for Parquet seekable, file) for `jobs`, which must share one
    format. `key` picks decompression by extension (.gz, .zst), as for objects in the bucket. The object is
    parsed once; only the columns the jobs use are converted (Parquet: read). An aggregation's table is what
    the mapper writes: its parts of at most `max_groups` rows, together (keys may repeat across them, and
    within them where the mapper states rows one by one)."""
    formats = {job.format.model_dump_json() for job in jobs}
    if len(formats) != 1:
        raise ValueError("map_object_bytes takes jobs of one input format")
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    used = frozenset().union(*(job.plan.columns for job in jobs))
    fmt = jobs[0].format
    reader = replace(fmt.reader(), include=tuple(n for n in fmt.columns if n in used))
    stats = ReadStats()
    collected: dict[str, list[pa.Table]] = {job.name: [] for job in jobs}
    accumulators = {job.name: PartialAccumulator(job.plan, max_groups, collected[job.name].append)
                    for job in jobs if not job.is_scan}
    for batch in batches(source, reader, key, stats, block_size):
        for job in jobs:
            if job.is_scan:
                collected[job.name].append(job.plan.apply(batch))
            else:
                accumulators[job.name].add(batch)
    tables = {}
    for job in jobs:
        if job.is_scan:
            tables[job.name] = pa.concat_tables(collected[job.name] or [job.plan.output_schema.empty_table()])
        else:
            tables[job.name] = pa.concat_tables([*collected[job.name], accumulators[job.name].result()])
    return KernelOutput(tables, stats)
