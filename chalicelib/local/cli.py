"""The `tally` command: `tally local` runs the service on this machine, `tally demo` runs the main job,
`validate` loads every job and table definition and reports each error (CI runs it before the tests),
`jobs` / `status` / `query` / `export` read the HTTP API (local mode's, or a deployed stage's: --api URL,
$TALLY_API, or --stage), `backfill`
maps what a job is missing, `create-buckets` makes a stage's buckets once, `deploy` / `package` deploy a stage
(or write its terraform), `replay-failures` invokes the mappers' failed invocations again, `bench` measures
Tally.

Exit codes, for scripts: 0 done; 1 the command failed (an API error such as an unknown job, a failed demo
check, a bucket name taken); 2 bad usage (argparse's code); 3 the service or S3 did not answer, or there are
no credentials to sign with.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from tally.endpoint import LOCAL_API

from .stack import LocalOptions

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="HTTP API port on 127.0.0.1")
    parser.add_argument("--s3-port", type=int, default=9000, help="port of the loopback S3 endpoint (moto)")
    parser.add_argument("--s3-endpoint", default=None, help="use this S3-compatible endpoint instead of moto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mapper processes")
    parser.add_argument("--reduce-every", type=float, default=2.0, metavar="SECONDS",
                        help="reducer period, stretched to 3x the last run; a run also starts when the mappers idle")
    parser.add_argument("--reconcile-every", type=float, default=30.0, metavar="SECONDS",
                        help="how often the input prefixes are compared with the results (lost events, backfill)")
    parser.add_argument("--log-level", default="WARNING", help="handlers' JSON log level (INFO shows every map)")
    parser.add_argument("--jobs", default="", metavar="NAME,...", help="run only these jobs (default: all)")
    parser.add_argument("--split-mb", type=float, default=256, metavar="MB",
                        help="map uncompressed text objects above this size as ranges in parallel (0: never)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=None, metavar="URL",
                        help=f"Tally's HTTP API (default: $TALLY_API, else --stage's, else local mode's {LOCAL_API})")
    parser.add_argument("--stage", default=None, help="a deployed stage: its API's URL as `chalice url --stage` "
                        "finds it (.chalice/deployed/<stage>.json)")
    parser.add_argument("--auth", choices=["auto", "none", "iam", "api_key"], default="auto",
                        help="auto: an API key if given, SigV4 (AWS credentials) for execute-api URLs, else none")
    parser.add_argument("--api-key", default=os.environ.get("TALLY_API_KEY"),
                        help="API Gateway key for an api_key stage (default: $TALLY_API_KEY)")
    parser.add_argument("--region", default=None, help="signing region (default: from the URL)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tally", description="Tally: streaming map/reduce on S3 events",
                                   epilog="exit codes: 0 ok, 1 failed, 2 bad usage, 3 service unreachable")
    commands = root.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="run Tally on this machine (S3 on loopback, mappers, reducer, API)")
    _local_arguments(local)
    validate = commands.add_parser("validate", help="load every job and table of the jobs package and report "
                                   "each error with its job's name (exit 1 on any)")
    validate.add_argument("--package", default="reducers", help="the jobs package (a stage's TALLY_JOBS_PACKAGE)")
    jobs = commands.add_parser("jobs", help="the jobs and their definitions")
    _api_arguments(jobs)
    status = commands.add_parser("status", help="progress of every job (or one): a table")
    status.add_argument("job", nargs="?")
    _api_arguments(status)
    query = commands.add_parser("query", help="a job's top groups")
    query.add_argument("job")
    query.add_argument("--top", type=_positive, default=10, metavar="N", help="groups to show (at most 1000)")
    query.add_argument("--order-by", default=None, metavar="NAME", help="key or aggregate (default: the first "
                       "aggregate)")
    query.add_argument("--asc", action="store_true", help="ascending (default: descending)")
    query.add_argument("--prefix", default=None, help="only groups whose first key starts with this")
    query.add_argument("--all", action="store_true", help="every row, page after page (instead of --top)")
    query.add_argument("--output", choices=["table", "json", "csv"], default=None,
                       help="table (default), json, or csv (nested values as JSON text, as exports write them)")
    _api_arguments(query)
    create_view = commands.add_parser("create-view", help="create a view: a job defined by one SQL statement, on "
                                      "the running service (mapped from the objects already in its table)")
    create_view.add_argument("name")
    create_view.add_argument("--sql", required=True, help="SELECT ... FROM <table> [WHERE] [GROUP BY] [HAVING]")
    _api_arguments(create_view)
    drop_view = commands.add_parser("drop-view", help="drop a view created with create-view (its state goes an "
                                    "hour later)")
    drop_view.add_argument("name")
    _api_arguments(drop_view)
    export = commands.add_parser("export", help="a job's current result as a Parquet or CSV file")
    export.add_argument("job")
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    export.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="save it here (default: print the presigned URL and what it holds)")
    _api_arguments(export)
    backfill = commands.add_parser("backfill", help="map what a job's results are missing from its input prefix")
    backfill.add_argument("job")
    backfill.add_argument("--stage", default=None, help="a deployed stage: its buckets from .chalice/config.json, "
                          "S3 through your AWS credentials (default: local mode)")
    backfill.add_argument("--s3-endpoint", default=None,
                          help="S3 endpoint (default: local mode's moto server, or AWS with --stage)")
    backfill.add_argument("--input-bucket", default="tally-input")
    backfill.add_argument("--state-bucket", default="tally-state")
    repair = commands.add_parser("repair", help="rebuild a job's result without live partials that were lost, "
                                 "then map those keys again (docs/deletion.md)")
    repair.add_argument("job")
    repair.add_argument("--reset", action="store_true",
                        help="start the result over (a lost ledger or result shard): the prefix is mapped again")
    for option, default in (("--stage", None), ("--s3-endpoint", None), ("--input-bucket", "tally-input"),
                            ("--state-bucket", "tally-state")):
        repair.add_argument(option, default=default)
    buckets = commands.add_parser("create-buckets", help="create a stage's input and state buckets (once)")
    buckets.add_argument("--stage", required=True)
    buckets.add_argument("--config", type=Path, default=Path(".chalice/config.json"))
    buckets.add_argument("--region", default=None, help="default: AWS_REGION / your AWS config")
    buckets.add_argument("--endpoint-url", default=None, help="another S3-compatible endpoint")
    deploy = commands.add_parser("deploy", help="chalice deploy a stage, then make the failure queue the "
                                 "mappers' on-failure destination")
    deploy.add_argument("--stage", required=True)
    deploy.add_argument("--region", default=None, help="default: AWS_REGION / your AWS config")
    package = commands.add_parser("package", help="a stage as terraform (chalice package) plus its failure queue")
    package.add_argument("--stage", required=True)
    package.add_argument("out", type=Path, nargs="?", default=Path("build/terraform"))
    replay = commands.add_parser("replay-failures", help="invoke the mappers' failed invocations again, deleting "
                                 "each from the failure queue once invoked")
    replay.add_argument("--stage", default=None, help="a deployed stage: its queue tally-<stage>-failures and "
                        "its functions, through your AWS credentials (default: local mode's dead-letter queue)")
    replay.add_argument("--region", default=None, help="with --stage; default: AWS_REGION / your AWS config")
    replay.add_argument("--endpoint", default=None, help="local mode's SQS endpoint (default: its moto server, "
                        "http://127.0.0.1:9000)")
    demo = commands.add_parser("demo", help="stream generated Big Data Benchmark data through local mode")
    _local_arguments(demo)
    demo.add_argument("--size-mb", type=_positive, default=256, help="uservisits data to generate")
    demo.add_argument("--file-mb", type=_positive, default=8, help="size of each uploaded file")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--upload-threads", type=_positive, default=4)
    demo.add_argument("--data-dir", type=Path, default=Path(".tally/demo-data"))
    bench = commands.add_parser("bench", help="measure the map kernel, local mode, the reducer and the cost model")
    bench.add_argument("--size-mb", type=_positive, default=256, help="data per table and format")
    bench.add_argument("--formats", type=_names, default="csv,csv.gz,jsonl,parquet",
                       help="comma-separated: csv, csv.gz, jsonl, parquet")
    bench.add_argument("--queries", type=_names, default="1a,1b,1c,2a,2b,2c", help="comma-separated BDB queries")
    bench.add_argument("--repeat", type=_positive, default=3, help="runs per measurement; the best is kept")
    bench.add_argument("--skip-e2e", action="store_true", help="skip local mode end to end")
    bench.add_argument("--skip-reduce", action="store_true", help="skip the reducer merge rate")
    bench.add_argument("--scale-groups", type=_group_counts, default="1M,4M", metavar="N,...",
                       help="result sizes of the scale benchmark (issue 16), e.g. 1M,4M,16M,64M")
    bench.add_argument("--skip-scale", action="store_true", help="skip the scale benchmark")
    bench.add_argument("--rss-object-mb", type=int, default=1024,
                       help="size of the object whose mapper peak RSS is measured (0: skip)")
    bench.add_argument("--workers", type=_positive, default=2, help="mapper processes end to end")
    bench.add_argument("--object-mb", type=_positive, default=256,
                       help="cost model: size of each input object (one mapper invocation each)")
    bench.add_argument("--seed", type=int, default=42)
    bench.add_argument("--data-dir", type=Path, default=Path(".tally/bench-data"), help="generated data cache")
    bench.add_argument("--markdown", type=Path, default=None, metavar="PATH", help="also write the tables here")
    return root


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _group_counts(text: str) -> tuple[int, ...]:
    from .bench_scale import parse_groups

    try:
        return parse_groups(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _local_options(args: argparse.Namespace) -> LocalOptions:
    return LocalOptions(port=args.port, s3_port=args.s3_port, workers=max(1, args.workers),
                        reduce_every=args.reduce_every, reconcile_every=args.reconcile_every,
                        s3_endpoint=args.s3_endpoint, log_level=args.log_level, jobs=args.jobs,
                        split_mb=args.split_mb)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
    from rich.console import Console

    from ..errors import TallyError
    from tally.transport import ApiError, NotDeployed, Unreachable

    console = Console(stderr=False)
    try:
        return _dispatch(args, console)
    except (ApiError, NotDeployed) as error:
        console.print(f"[red]error:[/] {error}")
        return EXIT_FAILED
    except (Unreachable, EndpointConnectionError, NoCredentialsError) as error:
        local = getattr(args, "api_url", None) == LOCAL_API or (
            args.command in ("backfill", "repair", "replay-failures") and not args.stage)
        hint = " (is `tally local` running?)" if local else ""
        console.print(f"[red]error:[/] {error}{hint}")
        return EXIT_UNREACHABLE
    except (TallyError, ClientError, BotoCoreError) as error:
        console.print(f"[red]error:[/] {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, console) -> int:
    if args.command == "local":
        return _run_local(_local_options(args))
    if args.command == "validate":
        return _run_validate(args, console)
    if args.command == "backfill":
        return _run_backfill(args, console)
    if args.command == "repair":
        return _run_repair(args, console)
    if args.command == "create-buckets":
        return _run_create_buckets(args, console)
    if args.command in ("deploy", "package", "replay-failures"):
        return _run_stage_command(args, console)
    if args.command in ("jobs", "status", "query", "export", "create-view", "drop-view"):
        from tally.client import Tally
        from tally.endpoint import resolve_url

        from . import commands

        args.api_url = resolve_url(args.api, args.stage)
        api = Tally(args.api_url, auth=args.auth, api_key=args.api_key, region=args.region)
        return getattr(commands, args.command.replace("-", "_"))(api, args, console)
    if args.command == "bench":
        return _run_bench(args, console)
    from .demo import DemoOptions, run_demo

    options = DemoOptions(size_mb=args.size_mb, file_mb=args.file_mb, seed=args.seed,
                          upload_threads=args.upload_threads, data_dir=args.data_dir)
    return EXIT_OK if run_demo(options, _local_options(args), console) else EXIT_FAILED


def _run_validate(args: argparse.Namespace, console) -> int:
    from rich.markup import escape

    from ..jobs import read_definitions

    definitions = read_definitions(args.package)
    errors = list(definitions.errors)
    # Run-time views (jobs defined through the API, stored in the state bucket) are definitions too: once they
    # exist, their errors join these, each with its view's name.
    for error in errors:
        console.print(f"[red]error:[/] {escape(error)}", soft_wrap=True)
    if errors:
        return EXIT_FAILED
    console.print(f"{args.package}: {len(definitions.jobs)} jobs and {len(definitions.tables)} tables, all valid")
    return EXIT_OK


def _run_create_buckets(args: argparse.Namespace, console) -> int:
    import boto3

    from .buckets import create_buckets, stage_buckets

    buckets = stage_buckets(args.stage, args.config)
    session = boto3.session.Session()
    region = args.region or session.region_name or "us-east-1"
    client = session.client("s3", region_name=region, endpoint_url=args.endpoint_url)
    for bucket, outcome in create_buckets(client, buckets, region).items():
        console.print(f"{bucket}: {outcome}")
    return EXIT_OK


def _run_stage_command(args: argparse.Namespace, console) -> int:
    from . import deploy

    if args.command == "package":
        written = deploy.package(args.stage, args.out)
        console.print(f"{args.out}: chalice.tf.json, the zips and {written.name}; then terraform init && apply")
        return EXIT_OK
    if args.command == "deploy":
        queue = deploy.deploy(args.stage, args.region)
        console.print(f"map_object's and map_range's failed invocations go to {queue}")
        return EXIT_OK
    return _run_replay(args, console)


def _run_replay(args: argparse.Namespace, console) -> int:
    import datetime as dt

    import boto3

    from .failures import REPLAYED, InvokeAgain, SendToLocalEvents, replay
    from .policies import failure_queue, function_name
    from .stack import DEAD_LETTERS, QUEUE

    started = dt.datetime.now(dt.timezone.utc)
    if args.stage:
        session = boto3.session.Session(region_name=args.region)
        sqs = session.client("sqs")
        queue = sqs.get_queue_url(QueueName=failure_queue(args.stage))["QueueUrl"]
        redeliver = InvokeAgain(session.client("lambda"),
                                {function_name(args.stage, handler) for handler in REPLAYED})
    else:
        sqs = boto3.client("sqs", endpoint_url=args.endpoint or "http://127.0.0.1:9000", region_name="us-east-1",
                           aws_access_key_id="tally-local", aws_secret_access_key="tally-local")
        queue = sqs.get_queue_url(QueueName=DEAD_LETTERS)["QueueUrl"]
        redeliver = SendToLocalEvents(sqs, sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"])
    report = replay(sqs, queue, redeliver, started)
    console.print(f"{report.replayed} failed invocations invoked again and deleted from {queue}"
                  + (f"; {report.later} that failed after the replay began were left" if report.later else ""))
    for error in report.errors:
        console.print(f"[red]not replayed (left in the queue):[/] {error}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _run_bench(args: argparse.Namespace, console) -> int:
    from rich.console import Console

    from .bench import BenchOptions, run_bench
    from .bench_data import FORMATS
    from .bench_kernels import QUERIES

    unknown = [f for f in args.formats if f not in FORMATS] + [q for q in args.queries if q not in QUERIES]
    if unknown:
        console.print(f"[red]error:[/] unknown format or query: {', '.join(unknown)}")
        return EXIT_USAGE
    if not console.is_terminal:  # piped to a file or a CI log: the tables are wide, do not fold them
        console = Console(width=200)
    run_bench(BenchOptions(size_mb=args.size_mb, formats=args.formats, queries=args.queries, repeat=args.repeat,
                           seed=args.seed, data_dir=args.data_dir, skip_e2e=args.skip_e2e,
                           skip_reduce=args.skip_reduce, rss_object_mb=args.rss_object_mb, workers=args.workers,
                           object_mb=args.object_mb, markdown=args.markdown, scale_groups=args.scale_groups,
                           skip_scale=args.skip_scale), console)
    return EXIT_OK


def _bucket_runtime(args: argparse.Namespace):
    """The engine against a deployed stage's buckets (--stage) or local mode's (the default)."""
    from ..runtime import Runtime
    from ..settings import Settings

    if args.stage:
        from .buckets import stage_buckets

        buckets = stage_buckets(args.stage)
        settings = Settings(s3_endpoint=args.s3_endpoint, input_bucket=buckets.input, state_bucket=buckets.state)
    else:
        settings = Settings(s3_endpoint=args.s3_endpoint or "http://127.0.0.1:9000",
                            input_bucket=args.input_bucket, state_bucket=args.state_bucket)
    return Runtime(settings)


def _run_repair(args: argparse.Namespace, console) -> int:
    from datetime import timedelta

    from ..engine.reducer import raise_failures

    runtime = _bucket_runtime(args)
    job = runtime.jobs.get(args.job)
    repairer = runtime.reconciler.repairer
    if args.reset:
        manifest = repairer.reset(job)
        console.print(f"{job.name}: result reset at generation {manifest.generation}")
    else:
        lost = repairer.find_lost(job)
        repairer.request(job, lost)
        console.print(f"{job.name}: {len(lost.contributions)} live versions with lost partials "
                      f"({len(lost.keys)} objects missing)")

    def drain() -> None:
        while True:
            report = runtime.reducer.reduce_reported(job)
            raise_failures([report])
            if not report.more_pending:
                return

    drain()  # drops the lost versions and rebuilds without them (or applies the reset)
    report = runtime.reconciler.reconcile(job, grace=timedelta(0))  # their keys' current versions, mapped again
    drain()
    console.print(f"{job.name}: {len(report.mapped)} objects mapped again; the result is repaired")
    return EXIT_OK


def _run_backfill(args: argparse.Namespace, console) -> int:
    from collections import Counter
    from datetime import timedelta

    from rich.progress import Progress

    runtime = _bucket_runtime(args)
    job = runtime.jobs.get(args.job)
    with Progress(console=console) as progress:
        task = progress.add_task(f"backfilling {job.name}", total=None)
        report = runtime.reconciler.reconcile(
            job, progress=lambda done, total: progress.update(task, completed=done, total=total),
            grace=timedelta(0))
    kinds = Counter(o.outcome for o in report.mapped)
    console.print(f"{job.name}: {kinds['mapped'] + kinds['fanned_out']} objects mapped, {kinds['quarantined']} "
                  f"quarantined, {kinds['failed']} failed, {report.removed} removals noted, "
                  f"{report.orphans_deleted} state objects collected; the reducer merges them on its next tick")
    if kinds["failed"]:
        console.print(f"[red]{kinds['failed']} objects failed to map[/]: the next backfill or reconcile tries them "
                      "again, and quarantines an object after TALLY_MAP_MAX_ATTEMPTS failures")
        return EXIT_FAILED
    return EXIT_OK


def _run_local(options: LocalOptions) -> int:
    from .stack import LocalTally

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalTally(options) as tally:
        print(f"S3 endpoint: {tally.s3_endpoint}  (buckets {options.input_bucket}, {options.state_bucket})")
        print(f"HTTP API:    {tally.api_url}/jobs  (described at {tally.api_url}/openapi.json)")
        print(f"dashboard:   {tally.api_url}/")
        print(f"upload with: aws s3 cp FILE s3://{options.input_bucket}/uservisits/ --endpoint-url "
              f"{tally.s3_endpoint}")
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
