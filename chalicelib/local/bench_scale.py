"""`tally bench --scale-groups 1M,4M,...`: how a commit and a first page cost as a result grows (issue 16).

For each size N, against a moto server of its own (its own process: moto's memory is not the engine's):
1. a bdb-agg-2c result of N distinct groups is built through the engine (synthetic partials handed over as the
   mapper hands them, committed by Reducer.reduce_job a few million groups a run), read back, and given one
   real object's commit (not timed);
2. in a fresh process, as a fresh reducer Lambda: the commit of one more real object's partial (~80 K groups,
   the generator's uservisits), timed with its peak RSS; then one more, by the same (now warm) reducer;
3. in a fresh process each, as the API Lambda: the first page (1,000 rows) by key and by the aggregate
   descending, cold then warm, with its peak RSS.
The steps run in child processes (bench_scale_child.py); this module runs them and makes the tables.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..settings import Settings
from . import bench_data
from .bench_report import NA, Section
from .bench_scale_child import INPUT, ORDERS, PAGE_LIMIT, STATE
from .bench_system import _moto_server

ROOT = Path(__file__).resolve().parents[2]  # app.py's directory: the page step imports it
JOB = "bdb-agg-2c"
MIB_PER_GB = 1024  # Lambda's memory sizes are MiB: "1.5 GB" is 1,536 MiB, as the mapper's 512 MB target reads
COMMIT_RATIO, REDUCER_MIB, PAGE_SECONDS, API_MIB = 1.5, 1.5 * MIB_PER_GB, 0.5, 512
TARGET_SMALL, TARGET_LARGE = 1_000_000, 64_000_000  # the sizes issue 16's commit targets compare


def parse_groups(text: str) -> tuple[int, ...]:
    """'1M,4M,16M' or '20K,40000': group counts, ascending."""
    units = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}
    counts = []
    for item in (part.strip().upper() for part in text.split(",")):
        if not item:
            continue
        number, scale = (item[:-1], units[item[-1]]) if item[-1] in units else (item, 1)
        try:
            counts.append(int(float(number) * scale))
        except ValueError:
            raise ValueError(f"not a group count: {item!r} (e.g. 1M, 250K, 40000)") from None
    if any(count < 1 for count in counts):
        raise ValueError("group counts must be positive")
    return tuple(sorted(set(counts)))


def groups_label(count: int) -> str:
    for unit, size in (("M", 1_000_000), ("K", 1_000)):
        if count >= size and count % size == 0:
            return f"{count // size:,} {unit}"
    return f"{count:,}"


@dataclass(frozen=True)
class ScaleOptions:
    groups: tuple[int, ...]
    data_dir: Path
    seed: int = 42
    object_mb: int = 14  # each real object: ~80 K rows of uservisits, as many 2c groups
    build_batch: int = 4_000_000  # groups a building reducer run commits at most


@dataclass(frozen=True)
class PageRun:
    order: str
    cold_seconds: float
    warm_seconds: float
    peak_mib: float
    baseline_mib: float
    rows: int
    total_rows: int


@dataclass(frozen=True)
class ScaleRow:
    groups: int  # N asked for
    read_back: int  # groups of the built result, read back through the engine
    distinct: int  # distinct keys among them
    build_seconds: float
    partial_groups: int  # groups of the real object's partial whose commit is timed
    commit_seconds: float  # a fresh reducer process's first commit
    commit_cpu_seconds: float  # its CPU time, every thread's
    peak_mib: float  # that process's peak RSS after it
    baseline_mib: float  # its RSS before it (imports, runtime)
    warm_seconds: float  # the same reducer's next commit, of one more object
    result_groups: int  # the result's groups after both
    shards: int | None  # after the timed commit (None: the manifest names no shards)
    warm_shards: int | None  # after the warm one: more if it re-partitioned the result
    pages: tuple[PageRun, ...]
    build_batch: int  # groups a building reducer run committed at most


def run_scale(options: ScaleOptions, console: Console | None = None) -> list[ScaleRow]:
    console = console or Console()
    with console.status(f"scale: generating 3 uservisits objects of {options.object_mb} MB"):
        objects = bench_data.uservisits(options.data_dir, 3 * options.object_mb, options.seed + 16,
                                        file_mb=options.object_mb).parts[:3]
    rows = []
    for groups in options.groups:
        with console.status(f"scale: a result of {groups:,} groups, a commit into it, its first pages"):
            rows.append(measure(groups, objects, options))
        row = rows[-1]
        console.log(f"scale {groups_label(groups)} groups: commit {row.commit_seconds:.2f} s, reducer peak "
                    f"{row.peak_mib:,.0f} MiB; warm first pages "
                    + ", ".join(f"{p.order} {p.warm_seconds:.2f} s" for p in row.pages))
    return rows


def measure(groups: int, objects: tuple[Path, ...], options: ScaleOptions) -> ScaleRow:
    with _moto_server() as (endpoint, client):
        keys = []
        for path in objects:
            keys.append(f"uservisits/scale-{path.name}")
            client.upload_file(str(path), INPUT, keys[-1])
        built = _child("build", endpoint, groups, options.build_batch, keys[0], keys[1])
        committed = _child("commit", endpoint, keys[2])
        pages = tuple(PageRun(**_child("page", endpoint, order)) for order in ORDERS)
    return ScaleRow(
        groups=groups, read_back=built["read_back"], distinct=built["distinct"], build_seconds=built["seconds"],
        partial_groups=built["next_groups"], commit_seconds=committed["seconds"],
        commit_cpu_seconds=committed["cpu_seconds"], peak_mib=committed["peak_mib"],
        baseline_mib=committed["baseline_mib"], warm_seconds=committed["warm_seconds"],
        result_groups=committed["result_groups"], shards=committed["shards"], warm_shards=committed["warm_shards"],
        pages=pages, build_batch=options.build_batch)


def _child(step: str, endpoint: str, *args) -> dict:
    """One step in a fresh process; its JSON answer. The TALLY_* environment is the API's, for the page step."""
    environment = Settings(input_bucket=INPUT, state_bucket=STATE, s3_endpoint=endpoint, jobs=JOB, api_auth="none",
                           log_level="WARNING", log_format="text").as_env()
    done = subprocess.run([sys.executable, "-m", "chalicelib.local.bench_scale_child", step, endpoint, JOB,
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **environment})
    if done.returncode != 0:
        raise RuntimeError(f"scale step {step} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- tables ------------------------------------------------------------------------------------------------

def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "PASS" if ok else "FAIL"


def commit_section(rows: list[ScaleRow], skipped: str | None = None) -> Section:
    section = Section("Scale: a commit into a large result (bdb-agg-2c)", [
        "groups N", "read back", "shards", "build s", "commit s", "commit / smallest N's", "commit CPU s",
        "reducer peak RSS MiB",
        "warm commit s", f"ratio <= {COMMIT_RATIO}x", f"RSS <= {REDUCER_MIB:,.0f} MiB"])
    if not rows:
        section.rows.append([NA] * 10 + [skipped or "skipped"])
        return section
    smallest = rows[0]
    for row in rows:
        ratio = row.commit_seconds / smallest.commit_seconds
        section.rows.append([
            groups_label(row.groups),
            f"{row.read_back:,}" + ("" if row.distinct == row.read_back else " (DUPLICATE keys)"),
            NA if row.shards is None else str(row.shards), f"{row.build_seconds:.1f}", f"{row.commit_seconds:.2f}",
            f"{ratio:.2f}x", f"{row.commit_cpu_seconds:.2f}", f"{row.peak_mib:,.0f}",
            f"{row.warm_seconds:.2f}" + _repartitioned(row), _verdict(ratio <= COMMIT_RATIO),
            _verdict(row.peak_mib <= REDUCER_MIB)])
    section.notes += [
        "The result: N distinct sourceIP-like keys ('ddd.ddd.ddd') with random adRevenue, lifted by the job's own "
        "plan and handed over as the mapper does (one part of 500,000 groups per placeholder input object, then "
        f"its inbox marker), committed by Reducer.reduce_job in runs of at most {rows[0].build_batch:,} "
        "groups ('build s'); 'read back': its groups read through Reducer.read_result. One real object was then "
        "committed into it, not timed (a result that has just crossed a shard threshold re-partitions on its next "
        "commit).",
        f"'commit s': one reducer run committing one uservisits object's partial ({rows[0].partial_groups:,} "
        "groups) in a fresh process built as a reducer Lambda is (Runtime from Settings): its committed state is "
        "read from S3 (moto's server, its own process, on loopback), none is cached yet; 'commit CPU s': that "
        "process's CPU time in it, every thread's (steadier than wall time when other work shares the machine). "
        "'reducer peak RSS': that "
        "process's ru_maxrss right after the commit. 'warm commit s': the same process's next run, one more "
        "object's partial (mapped in between), its reads of the result cached as a warm container's are. 'shards': "
        "the objects the manifest names for the result after the timed commit.",
        f"The targets: the commit at {groups_label(TARGET_LARGE)} groups <= {COMMIT_RATIO}x the commit at "
        f"{groups_label(TARGET_SMALL)}; the reducer's peak RSS at {groups_label(TARGET_LARGE)} <= 1.5 GB; each row "
        "here compares with the smallest N measured.",
    ]
    return section


def _repartitioned(row: ScaleRow) -> str:
    return "" if row.warm_shards == row.shards else f" (re-partitioned {row.shards} -> {row.warm_shards} shards)"


def page_section(rows: list[ScaleRow], skipped: str | None = None) -> Section:
    section = Section("Scale: the first page of a large result (bdb-agg-2c)", [
        "groups", "order", "cold s", "warm s", "API peak RSS MiB", "rows / total", f"warm <= {PAGE_SECONDS} s",
        f"RSS <= {API_MIB} MiB"])
    if not rows:
        section.rows.append([NA] * 7 + [skipped or "skipped"])
        return section
    for row in rows:
        for run in row.pages:
            section.rows.append([
                groups_label(row.groups), run.order, f"{run.cold_seconds:.2f}", f"{run.warm_seconds:.3f}",
                f"{run.peak_mib:,.0f}", f"{run.rows:,} / {run.total_rows:,}",
                _verdict(run.warm_seconds <= PAGE_SECONDS), _verdict(run.peak_mib <= API_MIB)])
    section.notes.append(
        f"GET /jobs/bdb-agg-2c/results?limit={PAGE_LIMIT} (by key), and &order_by=adRevenue&desc=true (by the "
        "aggregate), through app.py's route as the API Lambda runs it (chalice.test.Client), in a fresh process "
        "per ordering: 'cold' is its first request once the runtime is built (settings, S3 client, job catalog), "
        f"'warm' the same request again. 'API peak RSS': that process's ru_maxrss (about "
        f"{rows[0].pages[0].baseline_mib:,.0f} MiB before the first request: Python, Arrow, Chalice, boto3).")
    return section


def targets_section(rows: list[ScaleRow]) -> Section:
    section = Section("Targets (issue 16)", ["target", "measured", "verdict"])
    by_size = {row.groups: row for row in rows}
    small, large = by_size.get(TARGET_SMALL), by_size.get(TARGET_LARGE)
    ratio = large.commit_seconds / small.commit_seconds if small and large else None
    section.rows.append([
        f"commit at {groups_label(TARGET_LARGE)} groups <= {COMMIT_RATIO}x the commit at {groups_label(TARGET_SMALL)}",
        f"{ratio:.2f}x ({large.commit_seconds:.2f} s / {small.commit_seconds:.2f} s)" if ratio else
        _projected(rows, lambda row: row.commit_seconds, "s"),
        _verdict(None if ratio is None else ratio <= COMMIT_RATIO)])
    section.rows.append([
        f"reducer peak RSS at {groups_label(TARGET_LARGE)} groups <= 1.5 GB ({REDUCER_MIB:,.0f} MiB)",
        f"{large.peak_mib:,.0f} MiB" if large else _projected(rows, lambda row: row.peak_mib, "MiB"),
        _verdict(None if large is None else large.peak_mib <= REDUCER_MIB)])
    pages = [(row, run) for row in rows for run in row.pages]
    section.rows.append([
        f"first page warm <= {PAGE_SECONDS} s, each ordering, every size",
        ", ".join(f"{groups_label(row.groups)} {run.order} {run.warm_seconds:.2f} s" for row, run in pages) or NA,
        _verdict(all(run.warm_seconds <= PAGE_SECONDS for _, run in pages) if pages else None)])
    section.rows.append([
        f"API process peak RSS <= {API_MIB} MB, every size",
        ", ".join(f"{groups_label(row.groups)} {run.order} {run.peak_mib:,.0f} MiB" for row, run in pages) or NA,
        _verdict(all(run.peak_mib <= API_MIB for _, run in pages) if pages else None)])
    return section


def _projected(rows: list[ScaleRow], value, unit: str) -> str:
    """What was not measured, as arithmetic: the line through the smallest and largest sizes measured, at
    TARGET_LARGE. Today's commit rewrites every shard a partial reaches (an object's partial reaches all of
    them), so its time and memory grow about linearly with the result."""
    if len(rows) < 2:
        return f"{groups_label(TARGET_LARGE)} not measured"
    first, last = rows[0], rows[-1]
    slope = (value(last) - value(first)) / (last.groups - first.groups)
    at_large = value(last) + slope * (TARGET_LARGE - last.groups)
    text = (f"{groups_label(TARGET_LARGE)} not measured; linear through {groups_label(first.groups)} "
            f"({value(first):,.2f} {unit}) and {groups_label(last.groups)} ({value(last):,.2f} {unit}): "
            f"{at_large:,.1f} {unit}")
    small = next((row for row in rows if row.groups == TARGET_SMALL), None)
    if small is not None and unit == "s":
        text += f", {at_large / value(small):,.1f}x the {groups_label(TARGET_SMALL)} commit"
    return text


def sections(rows: list[ScaleRow], skipped: str | None = None) -> list[Section]:
    if not rows:
        return [commit_section(rows, skipped), page_section(rows, skipped)]
    return [commit_section(rows), page_section(rows), targets_section(rows)]
