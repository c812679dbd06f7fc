"""`tally bench`: the performance table of issue 4, on this machine.

For each Big Data Benchmark query and input format: Tally's map kernel on one core, the same query in DuckDB
on one thread in this process, and a per-line Python loop (BigLambda's mapper), on the same bytes; then local
mode end to end, the reducer's merge rate, a mapper's peak memory on a large object, and what the seed's
126.8 GB would cost on Lambda at the measured speeds, next to BigLambda's published figures; then how a commit
and a first page cost as a result grows to millions of groups (bench_scale.py, issue 16).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..jobs import load_jobs
from . import bench_data, cost
from .bench_kernels import (QUERIES, Timed, best_of, best_of_each, duckdb_runner, duckdb_sql, find_job,
                            job_in_format, one_core, python_loop, tally_kernel)
from .bench_report import (Section, cost_section, kernel_section, partials_section, render_console, render_markdown,
                           system_section, targets_section)


@dataclass
class BenchOptions:
    size_mb: int = 256
    formats: tuple[str, ...] = bench_data.FORMATS
    queries: tuple[str, ...] = tuple(QUERIES)
    repeat: int = 3
    seed: int = 42
    data_dir: Path = Path(".tally/bench-data")
    skip_e2e: bool = False
    skip_reduce: bool = False
    rss_object_mb: int = 1024  # 0: skip the peak-memory step
    workers: int = 2
    object_mb: int = 256  # the cost model's input object size: one mapper invocation each
    markdown: Path | None = None
    scale_groups: tuple[int, ...] = (1_000_000, 4_000_000)  # result sizes of the scale benchmark
    skip_scale: bool = False


@dataclass
class KernelRow:
    query: str
    fmt: str
    missing: str | None = None  # why there is no measurement
    csv_bytes: int = 0
    object_bytes: int = 0
    tally: Timed | None = None
    duckdb: Timed | None = None
    duckdb_double: Timed | None = None
    python_split: Timed | None = None  # BigLambda's loop (json.loads per line for JSON lines)
    python_csv: Timed | None = None  # csv.reader per line

    def mb_s(self, timed: Timed | None) -> float | None:
        return None if timed is None else self.csv_bytes / 1e6 / timed.seconds


@dataclass
class BenchResults:
    options: BenchOptions
    kernels: list[KernelRow] = field(default_factory=list)
    one_pass: KernelRow | None = None  # every job over uservisits/ in one pass: what end to end maps
    one_pass_jobs: tuple[str, ...] = ()
    end_to_end: object = None
    merges: list = field(default_factory=list)
    partials: list = field(default_factory=list)  # bench_partials.PartialFormat of one 2c partial
    memory: list = field(default_factory=list)
    costs: dict[str, tuple] = field(default_factory=dict)
    scale: list = field(default_factory=list)  # bench_scale.ScaleRow of each size
    seconds: float = 0.0


def run_bench(options: BenchOptions, console: Console | None = None) -> BenchResults:
    console = console or Console()
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    results = BenchResults(options)
    catalog = load_jobs()
    datasets: dict[str, bench_data.Dataset] = {}

    def dataset(table: str) -> bench_data.Dataset:
        if table not in datasets:
            with console.status(f"generating {options.size_mb} MB of {table} (seed {options.seed})"):
                make = bench_data.uservisits if table == "uservisits" else bench_data.rankings
                datasets[table] = make(options.data_dir, options.size_mb, options.seed)
        return datasets[table]

    for query in options.queries:
        job = find_job(catalog, query)
        for fmt in options.formats:
            if job is None:
                results.kernels.append(KernelRow(query, fmt, missing="n/a (job not built)"))
                continue
            variant = job_in_format(job, fmt)
            if variant is None:
                results.kernels.append(KernelRow(query, fmt, missing="n/a (format not built)"))
                continue
            with console.status(f"{query} {fmt}: preparing data"):
                data = dataset(QUERIES[query][0])
                path = data.path(fmt)
            with console.status(f"{query} {fmt}: Tally kernel, DuckDB, Python loop ({options.repeat} runs each)"):
                results.kernels.append(_measure(query, fmt, variant, data, path, options.repeat))
            console.log(_summary(results.kernels[-1]))

    uservisits_jobs = [j for j in catalog if j.matches("uservisits/part-00000.csv")]
    if uservisits_jobs and "csv" in options.formats:
        data = dataset("uservisits")
        body = data.csv.read_bytes()
        with console.status("one-pass kernel (every uservisits job, as the mapper runs them)"), one_core():
            timed = best_of(options.repeat, lambda: sum(tally_kernel(body, "uservisits/all.csv", uservisits_jobs).values()))
        results.one_pass = KernelRow(f"all {len(uservisits_jobs)} uservisits/ jobs", "csv",
                                     csv_bytes=len(body), object_bytes=len(body), tally=timed)
        results.one_pass_jobs = tuple(job.name for job in uservisits_jobs)
        del body
    if "bdb-agg-2c" in {job.name for job in catalog} and "csv" in options.formats:
        from ..engine.kernel import map_object_bytes
        from .bench_partials import partial_formats

        large = catalog.get("bdb-agg-2c")
        with console.status("partial formats (bdb-agg-2c's partial of one object)"), one_core():
            partial = map_object_bytes([large], dataset("uservisits").csv.read_bytes(), "uservisits/all.csv")
            results.partials = partial_formats(partial.tables[large.name], large.plan.fingerprint, options.repeat)
    _system_measurements(results, options, catalog, dataset, console)
    if not options.skip_scale and options.scale_groups and "bdb-agg-2c" in {job.name for job in catalog}:
        from .bench_scale import ScaleOptions, run_scale

        results.scale = run_scale(ScaleOptions(options.scale_groups, options.data_dir, options.seed), console)
    results.costs = _costs(results)
    results.seconds = time.monotonic() - started
    sections = build_sections(results)
    render_console(console, sections)
    if options.markdown is not None:
        options.markdown.parent.mkdir(parents=True, exist_ok=True)
        about = {**machine(), "load average at start": f"{load_at_start:.2f}",
                 "bench took": f"{results.seconds / 60:.1f} min"}
        options.markdown.write_text(render_markdown(sections, about, _command_line()))
        console.print(f"table written to {options.markdown}")
    return results


def _measure(query: str, fmt: str, job, data: bench_data.Dataset, path: Path, repeat: int) -> KernelRow:
    body = path.read_bytes()
    row = KernelRow(query, fmt, csv_bytes=data.csv_bytes, object_bytes=len(body))
    key = f"{job.prefix}bench.{fmt}"
    columns = dict(job.format.columns)
    engines = {"tally": lambda: sum(tally_kernel(body, key, [job]).values()),
               "duckdb": duckdb_runner(duckdb_sql(query, fmt, str(path), columns))}
    if any(t.replace(" ", "").lower().startswith("decimal(") for t in columns.values()):
        engines["duckdb_double"] = duckdb_runner(duckdb_sql(query, fmt, str(path), columns, double=True))
    loops = {name: loop for name, loop in zip(("python_split", "python_csv"), (
        python_loop(body, fmt, query, list(columns), use_csv) for use_csv in (False, True))) if loop}
    if fmt == "csv":  # where a target compares Tally with the loops: in the same rotation
        engines.update(loops)
    with one_core():  # Arrow's thread pools; DuckDB has its own setting, threads=1
        for name, timed in best_of_each(repeat, engines).items():
            setattr(row, name, timed)
    if fmt != "csv":  # the loops take seconds a run, so one run measures them well enough off CSV
        for name, loop in loops.items():
            setattr(row, name, best_of(1, loop))
    return row


def _summary(row: KernelRow) -> str:
    parts = [f"{row.query} {row.fmt}: Tally {row.mb_s(row.tally):.0f} MB/s", f"DuckDB {row.mb_s(row.duckdb):.0f}"]
    if row.python_split is not None:
        parts.append(f"Python {row.mb_s(row.python_split):.0f}")
    return ", ".join(parts)


def _system_measurements(results: BenchResults, options: BenchOptions, catalog, dataset, console) -> None:
    from . import bench_system

    names = {job.name for job in catalog}
    if not options.skip_reduce and {"bdb-agg-2a", "bdb-agg-2c"} <= names:
        with console.status("reducer merge rate (moto in-process server)"):
            body = dataset("uservisits").csv.read_bytes()
            results.merges = bench_system.merge_rates(body, catalog.get("bdb-agg-2a"), catalog.get("bdb-agg-2c"))
        with console.status("reducer, a warm commit into a result of millions of groups"):
            results.merges.append(bench_system.warm_commit(body, catalog.get("bdb-agg-2c")))
            del body
        for rate in results.merges:
            console.log(f"reducer {rate.label} (shards={rate.shards}): {rate.partials_s:.1f} partials/s, "
                        f"{rate.groups_s:,.0f} groups/s")
    if not options.skip_e2e:
        with console.status(f"local mode end to end, {options.workers} mapper workers"):
            results.end_to_end = bench_system.end_to_end(dataset("uservisits"), options.workers)
        console.log(f"end to end: {results.end_to_end.mb_s:.1f} MB/s")
    if options.rss_object_mb and {"bdb-agg-2a", "bdb-agg-2c"} <= names:
        with console.status(f"mapper peak RSS on one {options.rss_object_mb} MB object"):
            big = bench_data.uservisits(options.data_dir, options.rss_object_mb, options.seed + 1, file_mb=64)
            results.memory = bench_system.mapper_peak_memory(big.csv, ["bdb-agg-2a", "bdb-agg-2c"])
        for peak in results.memory:
            console.log(f"peak RSS {peak.job}: {peak.peak_mib:.0f} MiB")


def _costs(results: BenchResults) -> dict[str, tuple]:
    """Per query: (estimate with the S3 read cap, estimate CPU-bound, where the merge rate came from)."""
    large = next((m for m in results.merges if m.label == "large"), None)
    merge_rate, merge_source = (large.groups_s, "measured") if large else (6e6, "FIELD-NOTES 6 M/s, not measured")
    costs = {}
    for row in results.kernels:
        if row.fmt != "csv" or row.tally is None:
            continue
        object_bytes = results.options.object_mb * 1e6
        # Groups grow more slowly than rows: scaling them linearly up (and never down) over-counts.
        groups = row.tally.result_rows * max(1.0, object_bytes / row.csv_bytes)
        scan = QUERIES[row.query][0] == "rankings"  # the BDB's queries over rankings (1a-1c) are its scans
        measured = cost.Measured(row.mb_s(row.tally), groups, merge_rate, scan=scan)
        costs[row.query] = (cost.estimate(measured, cost.Deployment(object_bytes=object_bytes)),
                            cost.estimate(measured, cost.Deployment(object_bytes=object_bytes, s3_stream_mb_s=None)),
                            merge_source)
    return costs


def build_sections(results: BenchResults) -> list[Section]:
    from . import bench_scale

    options = results.options
    skipped = ("skipped (--skip-scale)" if options.skip_scale else "skipped (no --scale-groups)"
               if not options.scale_groups else "skipped (needs bdb-agg-2c)")
    return [kernel_section(results), partials_section(results), system_section(results), cost_section(results),
            targets_section(results), *bench_scale.sections(results.scale, skipped)]


def machine() -> dict[str, str]:
    import duckdb
    import pyarrow

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": model,
            "cores": str(os.cpu_count()), "memory": memory, "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "os": platform.platform(), "python": platform.python_version(),
            "pyarrow": pyarrow.__version__, "duckdb": duckdb.__version__}


def _command_line() -> str:
    return "tally " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("tally") else "tally bench"

