"""The `tally` command: `tally local` runs the service on this machine, `tally demo` runs the main job."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .stack import LocalOptions


def _local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="HTTP API port on 127.0.0.1")
    parser.add_argument("--s3-port", type=int, default=9000, help="port of the loopback S3 endpoint (moto)")
    parser.add_argument("--s3-endpoint", default=None, help="use this S3-compatible endpoint instead of moto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mapper processes")
    parser.add_argument("--reduce-every", type=float, default=2.0, metavar="SECONDS", help="reducer period")
    parser.add_argument("--reconcile-every", type=float, default=30.0, metavar="SECONDS",
                        help="how often the input prefixes are compared with the results (lost events, backfill)")
    parser.add_argument("--log-level", default="WARNING", help="handlers' JSON log level (INFO shows every map)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tally", description="Tally: streaming map/reduce on S3 events")
    commands = root.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="run Tally on this machine (S3 on loopback, mappers, reducer, API)")
    _local_arguments(local)
    backfill = commands.add_parser("backfill", help="map what a job's results are missing from its input prefix")
    backfill.add_argument("job")
    backfill.add_argument("--s3-endpoint", default="http://127.0.0.1:9000",
                          help="S3 endpoint of the running local mode (default: its moto server)")
    backfill.add_argument("--input-bucket", default="tally-input")
    backfill.add_argument("--state-bucket", default="tally-state")
    demo = commands.add_parser("demo", help="stream generated Big Data Benchmark data through local mode")
    _local_arguments(demo)
    demo.add_argument("--size-mb", type=_positive, default=256, help="uservisits data to generate")
    demo.add_argument("--file-mb", type=_positive, default=8, help="size of each uploaded file")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--upload-threads", type=_positive, default=4)
    demo.add_argument("--data-dir", type=Path, default=Path(".tally/demo-data"))
    return root


def _local_options(args: argparse.Namespace) -> LocalOptions:
    return LocalOptions(port=args.port, s3_port=args.s3_port, workers=max(1, args.workers),
                        reduce_every=args.reduce_every, reconcile_every=args.reconcile_every,
                        s3_endpoint=args.s3_endpoint, log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "local":
        return _run_local(_local_options(args))
    if args.command == "backfill":
        return _run_backfill(args)
    from .demo import DemoOptions, run_demo

    options = DemoOptions(size_mb=args.size_mb, file_mb=args.file_mb, seed=args.seed,
                          upload_threads=args.upload_threads, data_dir=args.data_dir)
    return 0 if run_demo(options, _local_options(args)) else 1


def _run_backfill(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from botocore.exceptions import EndpointConnectionError
    from rich.console import Console
    from rich.progress import Progress

    from ..errors import TallyError
    from ..runtime import Runtime
    from ..settings import Settings

    console = Console()
    runtime = Runtime(Settings(s3_endpoint=args.s3_endpoint, input_bucket=args.input_bucket,
                               state_bucket=args.state_bucket))
    try:
        job = runtime.jobs.get(args.job)
        with Progress(console=console) as progress:
            task = progress.add_task(f"backfilling {job.name}", total=None)
            report = runtime.reconciler.reconcile(
                job, progress=lambda done, total: progress.update(task, completed=done, total=total),
                grace=timedelta(0))
    except TallyError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    except EndpointConnectionError:
        console.print(f"[red]error:[/] nothing answers at {args.s3_endpoint}: is `tally local` running?")
        return 2
    quarantined = sum(1 for o in report.mapped if o.outcome == "quarantined")
    console.print(f"{job.name}: {len(report.mapped)} objects mapped ({quarantined} quarantined), "
                  f"{report.removed} removals noted, {report.orphans_deleted} orphaned parts deleted; "
                  "the reducer merges them on its next tick")
    return 0


def _run_local(options: LocalOptions) -> int:
    from .stack import LocalTally

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalTally(options) as tally:
        print(f"S3 endpoint: {tally.s3_endpoint}  (buckets {options.input_bucket}, {options.state_bucket})")
        print(f"HTTP API:    {tally.api_url}/jobs")
        print(f"upload with: aws s3 cp FILE s3://{options.input_bucket}/uservisits/ --endpoint-url "
              f"{tally.s3_endpoint}")
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
