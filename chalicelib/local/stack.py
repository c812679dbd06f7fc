"""`tally local`: the whole service on one machine, driving the very handlers Lambda runs.

- S3: moto's server on loopback (or any S3-compatible endpoint given with --s3-endpoint);
- events: S3 bucket notifications to an SQS queue on that server, carrying S3's own event records, taken
  into an in-process queue (Lambda's asynchronous event queue) and handed to `app.handler_map["map_object"]`
  in a pool of worker processes; a failed mapper is retried, three attempts in all as on Lambda, then the
  record Lambda would send to the on-failure destination goes to a dead-letter queue (`tally replay-failures`
  puts them back on the event queue; a poison object is quarantined by its third attempt, as on Lambda, so it
  never gets there); a worker that dies (killed, out of memory) fails the invocations it held, which are
  retried the same way, and the pool is replaced;
- the reconcile (on a timer, in this process) puts the object versions it finds unmapped into the same event
  queue, as it invokes map_object on AWS;
- large objects: the mappers' range tasks come back from the workers on a queue and join the same event
  queue, for `app.handler_map["map_range"]` in the same pool with the same retries (Lambda's asynchronous
  invocation of map_range, on AWS);
- the reducer: `app.handler_map["reduce_results"]` on a timer;
- HTTP: the Chalice app's routes on 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import multiprocessing
import os
import queue as queue_module
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from ..engine.events import notification
from ..settings import Settings
from ..storage import make_s3_client
from .failures import REPLAYED, failure_record

log = logging.getLogger("tally.local")

QUEUE = "tally-events"
DEAD_LETTERS = "tally-events-dlq"
# The functions' ARN prefix in the records of failed invocations: the stage "local" of the app.
LOCAL_FUNCTIONS = "arn:aws:lambda:local:000000000000:function:tally-local"
MAPPER_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
RECONCILE_AT_LEAST_EVERY = 300.0  # seconds, however busy the events are


@dataclass
class LocalOptions:
    port: int = 8000
    s3_port: int = 9000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    reduce_every: float = 2.0
    reconcile_every: float = 30.0
    s3_endpoint: str | None = None
    host: str = "127.0.0.1"
    input_bucket: str = "tally-input"
    state_bucket: str = "tally-state"
    log_level: str = "WARNING"
    jobs: str = ""  # comma-separated job names; empty: every job
    split_mb: float = 256  # objects above this are mapped as ranges in parallel (0: never)


@dataclass
class LambdaContext:
    """What handlers may read of Lambda's context object."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:tally"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def scheduled_event() -> dict:
    """An EventBridge scheduled event, as the reducer's Lambda receives it every minute."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": "us-east-1", "resources": ["arn:aws:events:local:000000000000:rule/tally-reduce"],
            "detail": {}}


# -- worker processes ---------------------------------------------------------------------------------------

def _init_worker(environment: dict[str, str], range_tasks) -> None:
    os.environ.update(environment)
    import app  # noqa: F401 - import once per worker, as a Lambda container does on cold start
    from ..runtime import Runtime, set_runtime

    # The worker's mapper hands range tasks to the stack, which queues them as Lambda queues invocations.
    runtime = Runtime(Settings.from_env(), dispatch=functools.partial(_send_range_tasks, range_tasks))
    set_runtime(runtime)
    # Build the S3 client (botocore loads and parses the S3 model: about 0.4 s of CPU) and the mapper here, as
    # a Lambda's init would, not inside the first event, where the two workers paid it in the first burst.
    runtime.mapper  # noqa: B018 - built for its side effect


def _send_range_tasks(range_tasks, tasks: list) -> None:
    range_tasks.put([task.to_dict() for task in tasks])


def _ready(pause: float) -> int:
    time.sleep(pause)  # long enough that every worker takes one of the warm-up calls
    return os.getpid()


def _invoke(handler: str, event: dict) -> list[dict]:
    import app

    return app.app.handler_map[handler](event, LambdaContext(handler))


def _start_moto(host: str, port: int) -> subprocess.Popen:
    """moto's S3 server in its own process: it serves every byte of input and state, and in ours it would
    contend for the GIL with the reducer and the API."""
    process = subprocess.Popen([sys.executable, "-m", "chalicelib.local.moto_server", "-H", host, "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto's server exited with {process.returncode}: is port {port} free?")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"moto's server did not listen on {host}:{port} within 30 s")


def _quiet_handler_class():
    from chalice.local import ChaliceRequestHandler

    class QuietRequestHandler(ChaliceRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
            log.debug(format, *args)

    return QuietRequestHandler


class LocalTally:
    def __init__(self, options: LocalOptions):
        self.options = options
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._moto = None
        self._queue: str | None = None
        self._dead_letters: str | None = None
        # Invocations waiting for a worker: (handler, event, attempt), Lambda's asynchronous event queue. The
        # handler is map_object for S3's events, map_range for the range tasks of large objects.
        self._events: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._range_tasks = None  # the workers' range tasks, on their way to _events
        self._http = None
        self.pool: ProcessPoolExecutor | None = None
        self.errors: list[str] = []
        self.mapped_events = 0
        self._in_flight = threading.BoundedSemaphore(max(2, 2 * options.workers))
        self._running = 0  # invocations handed to the pool and not yet finished
        self._running_lock = threading.Lock()
        self._reducer_wake = threading.Event()  # set when the mappers fall idle: reduce now, not at the next tick

    @property
    def s3_endpoint(self) -> str:
        return self.options.s3_endpoint or f"http://{self.options.host}:{self.options.s3_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    @property
    def settings(self) -> Settings:
        # Text logs: the handlers' records and metric sets as readable lines in the terminal, not JSON/EMF. No
        # API authentication: the API listens on loopback and has no API Gateway in front of it to check any.
        return Settings(input_bucket=self.options.input_bucket, state_bucket=self.options.state_bucket,
                        s3_endpoint=self.s3_endpoint, log_level=self.options.log_level, log_format="text",
                        jobs=self.options.jobs, split_mb=self.options.split_mb, read_streams=1, api_auth="none",
                        view_refresh_seconds=0)

    def client(self, service: str = "s3"):
        if service == "s3":
            return make_s3_client(self.s3_endpoint, self.settings.region)
        import boto3

        return boto3.client(service, endpoint_url=self.s3_endpoint, region_name=self.settings.region,
                            aws_access_key_id="tally-local", aws_secret_access_key="tally-local")

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> "LocalTally":
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self.options.s3_endpoint is None:
            self._moto = _start_moto(self.options.host, self.options.s3_port)
        environment = self.settings.as_env()
        os.environ.update(environment)
        from ..runtime import Runtime, set_runtime

        # The reconcile, in this process, hands what it finds to the workers through the same queue as S3's
        # events, as it invokes map_object on AWS.
        runtime = Runtime(self.settings, dispatch=self.fan_out, object_dispatch=self.map_later)
        set_runtime(runtime)
        s3 = self.client()
        for bucket in (self.options.input_bucket, self.options.state_bucket):
            try:
                s3.create_bucket(Bucket=bucket)
            except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
                pass
        # Its S3 client and the jobs (views included: the state bucket must exist), built before the first tick.
        runtime.reducer  # noqa: B018 - built for its side effect
        self._range_tasks = multiprocessing.get_context("spawn").Queue()
        self.pool = self._new_pool()
        # Start the workers (each imports the app, Arrow and boto3: about a second of CPU) now, as provisioned
        # Lambdas would be, rather than inside the first burst of events, where they compete with it.
        for warm in [self.pool.submit(_ready, 0.2) for _ in range(self.options.workers)]:
            warm.result()
        self._spawn(self._collect_range_tasks)
        if self._moto is not None:
            self._queue = self._subscribe_queue()
            self._spawn(self._pump, self._queue)
        else:
            self._spawn(self._poll_listing)
        self._spawn(self._dispatch_forever)
        self._spawn(self._reduce_forever)
        self._spawn(self._reconcile_forever)
        self._serve_http()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._reducer_wake.set()
        if self._http is not None:
            self._http.shutdown()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self._moto is not None:
            self._moto.terminate()
            self._moto.wait(timeout=10)

    def __enter__(self) -> "LocalTally":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.options.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.settings.as_env(), self._range_tasks))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=target.__name__)
        thread.start()
        self._threads.append(thread)

    # -- events ----------------------------------------------------------------------------------------------

    def _subscribe_queue(self) -> str:
        sqs, s3 = self.client("sqs"), self.client()
        self._dead_letters = sqs.create_queue(QueueName=DEAD_LETTERS)["QueueUrl"]
        queue = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=self.options.input_bucket,
            NotificationConfiguration={"QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
        )
        return queue

    def _pump(self, queue: str) -> None:
        """Takes S3's notifications off the SQS queue as soon as they arrive and acknowledges them, as
        Lambda's asynchronous invocation takes events off S3's hands into its own queue; retries happen
        from there. A backlog must not sit in moto's SQS, whose receive is quadratic in the queue's length."""
        sqs = self.client("sqs")
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                messages = messages.get("Messages", [])
                for message in messages:
                    body = json.loads(message["Body"])
                    if "Records" in body:  # not the s3:TestEvent sent when the subscription is made
                        self._events.put(("map_object", body, 1))
                    elif body.get("invoke") in REPLAYED:  # a failed invocation, replayed
                        self._events.put((body["invoke"], body["payload"], 1))
                if messages:
                    sqs.delete_message_batch(QueueUrl=queue, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
            except Exception as exc:  # noqa: BLE001 - the server may be stopping; undeleted messages come again
                if not self._stop.is_set():
                    log.warning("receiving events failed: %s", exc)
                    time.sleep(0.5)

    def fan_out(self, tasks: list) -> None:
        """A mapper's `dispatch`: each range task becomes an invocation of map_range."""
        for task in tasks:
            self._events.put(("map_range", task.to_dict(), 1))

    def map_later(self, event) -> None:
        """The reconcile's `dispatch`: an object version becomes an invocation of map_object with the one-record
        S3 notification S3 would have sent."""
        self._events.put(("map_object", notification([event]), 1))

    def _collect_range_tasks(self) -> None:
        while not self._stop.is_set():
            try:
                tasks = self._range_tasks.get(timeout=0.5)
            except queue_module.Empty:
                continue
            for task in tasks:
                self._events.put(("map_range", task, 1))

    def _dispatch_forever(self) -> None:
        """Hands each event to a mapper in the pool, at most two per worker in flight. A failed invocation is
        tried again, MAPPER_ATTEMPTS times in all as Lambda does, then sent to the dead-letter queue."""
        while not self._stop.is_set():
            try:
                handler, event, attempt = self._events.get(timeout=0.5)
            except queue_module.Empty:
                continue
            while not self._in_flight.acquire(timeout=0.5):
                if self._stop.is_set():
                    return
            with self._running_lock:
                self._running += 1
            future = self._submit(handler, event)
            future.add_done_callback(functools.partial(self._mapped, handler, event, attempt))

    def _submit(self, handler: str, event: dict) -> Future:
        try:
            return self.pool.submit(_invoke, handler, event)
        except BrokenProcessPool:
            # A worker died and broke the pool; on Lambda that ends only its own invocation. The invocations the
            # pool held have failed (and are retried in _mapped, their attempts counted as on Lambda); the rest
            # go to a new pool instead of stopping here for good.
            log.error("a mapper process died; starting a new pool")
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(_invoke, handler, event)

    def _mapped(self, handler: str, event: dict, attempt: int, future: Future) -> None:
        self._in_flight.release()
        with self._running_lock:
            self._running -= 1
            if not self._running and self._events.empty():
                self._reducer_wake.set()
        error = None if future.cancelled() else future.exception()
        if error is None:
            self.mapped_events += 1
            return
        self.errors.append(f"{handler}: {type(error).__name__}: {error}")
        if attempt < MAPPER_ATTEMPTS:
            log.error("%s failed (attempt %d, will retry): %s", handler, attempt, error)
            threading.Timer(1.0, self._events.put, [(handler, event, attempt + 1)]).start()
        else:
            log.error("%s failed %d times; event sent to %s: %s", handler, attempt, DEAD_LETTERS, error)
            if self._dead_letters:
                record = failure_record(f"{LOCAL_FUNCTIONS}-{handler}", event, error, attempt,
                                        dt.datetime.now(dt.timezone.utc))
                self.client("sqs").send_message(QueueUrl=self._dead_letters, MessageBody=json.dumps(record))

    def _poll_listing(self) -> None:
        """With a foreign S3 endpoint there is no notification to subscribe to: list the input bucket and
        hand each new object version to the mapper in the shape of an S3 event record."""
        s3, dispatched = self.client(), set()
        while not self._stop.is_set():
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.options.input_bucket):
                for item in page.get("Contents", []):
                    version = (item["Key"], item["ETag"].strip('"'))
                    if version in dispatched:
                        continue
                    dispatched.add(version)
                    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
                        "bucket": {"name": self.options.input_bucket},
                        "object": {"key": item["Key"], "eTag": version[1], "size": item["Size"]}}}
                    self._events.put(("map_object", {"Records": [record]}, 1))
            self._stop.wait(1.0)

    # -- reducer and HTTP ------------------------------------------------------------------------------------

    def _reduce_forever(self) -> None:
        """The reducer on a timer, as EventBridge runs it on AWS, with two adjustments for one machine. A run
        merges new partials into whole result shards, so its cost grows with the results, not with what is new:
        at a fixed 2 s rate during a burst it took more CPU than the mappers it shares two cores with (measured,
        128 MB of uservisits, 7 jobs). So the next run waits at least twice as long as the last one took, which
        holds the reducer to a third of a core; and a run starts at once when the mappers fall idle, so results
        catch up as soon as there is nothing else to do."""
        import app

        next_run = time.monotonic() + self.options.reduce_every
        while True:
            self._reducer_wake.wait(max(0.0, next_run - time.monotonic()))
            if self._stop.is_set():
                return
            self._reducer_wake.clear()
            started = time.monotonic()
            try:
                app.app.handler_map["reduce_results"](scheduled_event(), LambdaContext("reduce_results"))
            except Exception as exc:  # noqa: BLE001 - like EventBridge, the next tick runs again
                self.errors.append(f"reducer: {exc}")
                log.error("reducer failed: %s", exc)
            took = time.monotonic() - started
            next_run = started + max(self.options.reduce_every, 3 * took)

    def _reconcile_forever(self) -> None:
        import app

        last = time.monotonic()
        while not self._stop.wait(self.options.reconcile_every):
            # Objects queued behind a backlog of events are late, not lost: mapping them here as well would only
            # add to the backlog. Lost events are still made up for at least every RECONCILE_AT_LEAST_EVERY.
            if self._events.qsize() and time.monotonic() - last < RECONCILE_AT_LEAST_EVERY:
                continue
            last = time.monotonic()
            try:
                app.app.handler_map["reconcile_inputs"](scheduled_event(), LambdaContext("reconcile_inputs"))
            except Exception as exc:  # noqa: BLE001 - the next tick runs again
                self.errors.append(f"reconcile: {exc}")
                log.error("reconcile failed: %s", exc)

    def _serve_http(self) -> None:
        self._http = serve_http(self.options.host, self.options.port)


def serve_http(host: str, port: int):
    """The Chalice app's routes on host:port, served from a thread; `.shutdown()` stops it."""
    import app
    from chalice.config import Config
    from chalice.local import CustomLocalChalice, LocalDevServer, create_local_server

    config = Config.create(chalice_stage="local", app_name="tally", chalice_app=app.app)
    if isinstance(app.app, CustomLocalChalice):  # a second local server in this process: already adapted
        server = LocalDevServer(app.app, config, host, port)
    else:
        server = create_local_server(app.app, config, host, port)
    # Chalice's handler logs every request to stderr; local mode keeps the terminal for progress.
    server.server.RequestHandlerClass = functools.partial(
        _quiet_handler_class(), app_object=server.app_object, config=config)
    threading.Thread(target=server.server.serve_forever, daemon=True, name="http").start()
    return server
