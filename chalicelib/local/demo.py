"""`tally demo`: Big Data Benchmark data streamed through local mode, checked against DuckDB.

Generates BDB-shaped `uservisits` files (deterministic seed), starts local mode, uploads the files as a stream
of arrivals while the mappers and the reducer run, shows progress, then prints the top groups of bdb-agg-2a
and checks every group of the served result against DuckDB over the same files.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from tally.client import Tally

from .datagen import write_uservisits
from .referee import bdb_aggregation, differences, revenue_by_day
from .stack import LocalOptions, LocalTally

JOBS = {"bdb-agg-2a": 8, "bdb-agg-2b": 10, "bdb-agg-2c": 12}
# The jobs of issue 5's features, over the same files: mapped in the same pass, waited for, shown or checked.
FEATURE_JOBS = ["visits-by-country", "revenue-by-day", "duration-histogram", "visits-by-browser"]
# job -> (DuckDB's answer over the files, a served row's (key, value) in the same shape)
CHECKS = {
    **{job: (lambda paths, n=length: bdb_aggregation(paths, n),
             lambda row: (row["key"]["sourceIP_prefix"], row["values"]["adRevenue"])) for job, length in JOBS.items()},
    "revenue-by-day": (revenue_by_day,
                       lambda row: ((row["key"]["window_start"], row["key"]["countryCode"]), row["values"]["revenue"])),
}


@dataclass
class DemoOptions:
    size_mb: int = 256
    file_mb: int = 8
    seed: int = 42
    upload_threads: int = 4
    data_dir: Path = Path(".tally/demo-data")
    timeout: float = 900.0
    check: tuple[str, ...] = ("bdb-agg-2a", "revenue-by-day")


def prepare_data(options: DemoOptions, console: Console) -> list[Path]:
    directory = options.data_dir / f"uservisits-{options.size_mb}mb-{options.file_mb}mb-seed{options.seed}"
    stamp = directory / "COMPLETE"
    if stamp.exists():
        return sorted(directory.glob("part-*.csv"))
    with console.status(f"generating {options.size_mb} MB of uservisits (seed {options.seed})"):
        paths = write_uservisits(directory, options.size_mb << 20, options.file_mb << 20, options.seed)
    stamp.write_text(json.dumps({"files": len(paths)}))
    return paths


def run_demo(options: DemoOptions, local: LocalOptions, console: Console | None = None) -> bool:
    console = console or Console()
    paths = prepare_data(options, console)
    total_bytes = sum(p.stat().st_size for p in paths)
    console.print(f"[bold]{len(paths)} files, {total_bytes / 1e6:.1f} MB[/] of BDB uservisits")
    selected = {name.strip() for name in local.jobs.split(",") if name.strip()}
    running = [job for job in [*JOBS, *FEATURE_JOBS] if not selected or job in selected]
    with LocalTally(local) as tally:
        console.print(f"S3 endpoint  {tally.s3_endpoint}\nHTTP API     {tally.api_url}\n"
                      f"dashboard    {tally.api_url}/")
        api = Tally(tally.api_url)
        s3 = tally.client()
        started = time.monotonic()
        with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                      TransferSpeedColumn(), TimeElapsedColumn(), console=console) as progress:
            uploaded = progress.add_task("uploaded (bytes)", total=total_bytes)
            merged = {job: progress.add_task(f"merged {job}", total=len(paths)) for job in running}

            def upload(path: Path) -> float:
                s3.upload_file(str(path), local.input_bucket, f"uservisits/{path.name}")
                progress.advance(uploaded, path.stat().st_size)
                return time.monotonic()

            with ThreadPoolExecutor(options.upload_threads) as uploads:
                pending = [uploads.submit(upload, p) for p in paths]
                idle_at = wait_until_idle(api, running, options.timeout, progress, merged,
                                          uploads_done=lambda: all(f.done() for f in pending))
            last_upload = max(f.result() for f in pending)
        elapsed = idle_at - started
        console.print(f"end to end: {total_bytes / 1e6:.1f} MB in {elapsed:.1f} s = "
                      f"[bold]{total_bytes / 1e6 / elapsed:.1f} MB/s[/] (first upload -> idle, "
                      f"{local.workers} mapper workers); last upload -> idle {idle_at - last_upload:.2f} s")
        if "bdb-agg-2a" in running:
            _print_top(console, api, "bdb-agg-2a")
        if "visits-by-country" in running:
            _print_countries(console, api)
        ok = True
        for job in (job for job in options.check if job in running):
            with console.status(f"checking every group of {job} against DuckDB"):
                referee, served = CHECKS[job]
                expected = referee(paths)
                actual = dict(served(row) for row in api.results(job))
            problems = differences(expected, actual)
            if problems:
                ok = False
                console.print(f"[bold red]FAIL[/] {job}: {len(problems)} differences")
                for line in problems:
                    console.print("  " + line)
            else:
                console.print(f"[bold green]PASS[/] {job}: all {len(expected)} groups equal DuckDB's exactly")
        if tally.errors:
            console.print(f"[yellow]{len(tally.errors)} handler errors (retried): {tally.errors[:3]}")
    return ok


def wait_until_idle(api: Tally, jobs: list[str], timeout: float, progress: Progress | None = None,
                    tasks: dict | None = None, uploads_done=lambda: True) -> float:
    """Poll status until every job is idle after the last upload; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    waiting, statuses = list(jobs), {}
    while time.monotonic() < deadline:
        done = uploads_done()
        statuses = {}
        for job in waiting:
            statuses[job] = api.status(job)
            # A small job's status lists its input prefix; without progress bars to feed, one busy job is answer enough.
            if progress is None and not statuses[job]["idle"]:
                break
        if progress is not None:
            for job, status in statuses.items():
                progress.update(tasks[job], completed=status["objects"]["merged"])
        if done:
            # Nothing more is uploaded, so a job seen idle stays idle: stop asking about it.
            waiting = [job for job in waiting if job not in statuses or not statuses[job]["idle"]]
            if not waiting:
                return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"jobs not idle after {timeout:.0f} s: {waiting}")


def _print_top(console: Console, api: Tally, job: str, count: int = 10) -> None:
    page = api.page(job, order_by="adRevenue", desc=True, limit=count)
    table = Table(title=f"{job}: top {count} of {page['total_rows']} groups by SUM(adRevenue)")
    table.add_column("SUBSTR(sourceIP, 1, 8)")
    table.add_column("SUM(adRevenue)", justify="right")
    for row in page["rows"]:
        table.add_row(row["key"]["sourceIP_prefix"], str(row["values"]["adRevenue"]))
    console.print(table)


def _print_countries(console: Console, api: Tally, count: int = 8) -> None:
    page = api.page("visits-by-country", order_by="visitors", desc=True, limit=count)
    table = Table(title=f"visits-by-country: top {count} of {page['total_rows']} countries by distinct visitors")
    for column, justify in [("country", "left"), ("visitors (HLL)", "right"), ("p95 duration (KLL)", "right"),
                            ("revenue stddev", "right"), ("top searchWords", "left")]:
        table.add_column(column, justify=justify)
    for row in page["rows"]:
        values = row["values"]
        words = ", ".join(f"{w['value']} {w['count']}" for w in values["top_words"][:3])
        table.add_row(row["key"]["countryCode"], f"{values['visitors']:,}", f"{values['p95_duration']:g}",
                      f"{float(values['revenue_stddev']):.2f}", words)
    console.print(table)
