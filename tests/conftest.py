"""Fixtures: S3 is moto behind boto3 (the same client code as production), handlers are called as Lambda
calls them (chalice.test.Client), and S3 events are built the way S3 builds them."""
from __future__ import annotations

import csv
import gzip
import io
import os
from contextlib import contextmanager
from typing import Iterator
from decimal import Decimal
from urllib.parse import quote_plus

import boto3
import pytest
from hypothesis import settings as hypothesis_settings
from moto import mock_aws

hypothesis_settings.register_profile("dev", max_examples=40, deadline=None)
hypothesis_settings.register_profile("ci", max_examples=200, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

INPUT, STATE = "tally-input", "tally-state"
# The suite's fake credentials: moto takes any, SeaweedFS is given exactly this key.
ACCESS_KEY, SECRET_KEY = "testing", "testing"

# app.py reads its routes' authorization once, when first imported: the tests call the routes in-process, as
# local mode does, where no API Gateway checks a signature (Chalice's local gateway would admit an IAM route
# anyway, with a warning per request). Set before any test imports app.
os.environ["TALLY_API_AUTH"] = "none"


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=INPUT)
        client.create_bucket(Bucket=STATE)
        yield client


@pytest.fixture
def s3_server():
    """moto's S3 over HTTP on loopback, for tests whose threads hit S3 at once: the in-process mock is not
    thread-safe (a LIST racing a DELETE fails inside moto), the server behaves like S3 does."""
    import socket

    from moto.server import ThreadedMotoServer

    from chalicelib.local.moto_server import cache_service_lookup

    cache_service_lookup()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's state is process-wide: without a reset, a test would see the objects of the server tests before it.
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")).close()
    from chalicelib.storage import make_s3_client

    client = make_s3_client(f"http://127.0.0.1:{port}", "us-east-1")
    client.create_bucket(Bucket=INPUT)
    client.create_bucket(Bucket=STATE)
    yield client
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs():
    """One `weed server` for the session (about 3 s to start, 120 MB); tests get emptied or new buckets."""
    from .seaweed import SeaweedFS

    with SeaweedFS(ACCESS_KEY, SECRET_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_s3(seaweedfs):
    """A boto3 client from make_s3_client on SeaweedFS. Session-scoped, so hypothesis tests may take it."""
    return seaweedfs.client()


@pytest.fixture
def s3_clock(monkeypatch):
    """The clock moto stamps objects' LastModified with, set back or forward through `.offset`: objects written
    meanwhile look as old (or as new) as that, to the reconcile's and the collector's age tests."""
    import datetime as dt
    import types

    import moto.s3.models

    clock = types.SimpleNamespace(offset=dt.timedelta(0))
    real = moto.s3.models.utcnow
    monkeypatch.setattr(moto.s3.models, "utcnow", lambda: real() + clock.offset)
    return clock


@pytest.fixture
def runtime(request):
    s3 = request.getfixturevalue("s3_server" if "s3_server" in request.fixturenames else "s3")
    from chalicelib.runtime import Runtime, set_runtime
    from chalicelib.settings import Settings

    # The in-process mock is not thread-safe (a LIST racing a DELETE fails inside moto), and with many jobs
    # reduce_all's parallel jobs hit that often: reduce one job at a time there. Tests of concurrent reducers
    # ask for s3_server.
    parallelism = 4 if "s3_server" in request.fixturenames else 1
    rt = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, reduce_parallelism=parallelism), s3_client=s3)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def lambdas(runtime):
    """The Chalice app's handlers, invoked as Lambda invokes them."""
    import app
    from chalice.test import Client

    with Client(app.app) as client:
        yield client


def s3_record(key: str, etag: str, size: int, bucket: str = INPUT, sequencer: str = "0A",
              name: str = "ObjectCreated:Put", version_id: str | None = None) -> dict:
    """One record of an S3 notification: S3 URL-encodes the key and writes `+` for spaces; a versioned bucket's
    records carry the version id."""
    obj = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag, "sequencer": sequencer}
    if version_id:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }


class Uploader:
    """Puts objects into the input bucket and returns the S3 event records S3 would send for them."""

    def __init__(self, s3):
        self.s3 = s3

    def put(self, key: str, body: bytes | str, compress: bool = False) -> dict:
        data = body.encode() if isinstance(body, str) else body
        if compress:
            data = gzip.compress(data)
        response = self.s3.put_object(Bucket=INPUT, Key=key, Body=data)
        return s3_record(key, response["ETag"].strip('"'), len(data), version_id=response.get("VersionId"))

    def delete(self, key: str) -> dict:
        response = self.s3.delete_object(Bucket=INPUT, Key=key)
        name = "ObjectRemoved:DeleteMarkerCreated" if response.get("DeleteMarker") else "ObjectRemoved:Delete"
        return s3_record(key, "", 0, name=name, sequencer=None)

    def event(self, *records: dict) -> dict:
        return {"Records": list(records)}


@pytest.fixture
def uploads(runtime):
    return Uploader(runtime.client)


def uservisits_rows(*rows: tuple) -> str:
    """CSV text in the BDB uservisits shape from (sourceIP, adRevenue) pairs; the other columns are fixed."""
    return "".join(
        f"{ip},http://example.com/{i},2001-02-03,{revenue},Mozilla/5.0,USA,USA-EN,word,{i % 50 + 1}\n"
        for i, (ip, revenue) in enumerate(rows)
    )


def rankings_rows(*rows: tuple) -> str:
    """CSV text in the BDB rankings shape (pageURL, pageRank, avgDuration) from (pageURL, pageRank) pairs."""
    return "".join(f"{url},{rank},{i % 50 + 1}\n" for i, (url, rank) in enumerate(rows))


def scheduled_event() -> dict:
    from chalicelib.local.stack import scheduled_event as make

    return make()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def running_local_tally(**options):
    """`tally local` on free ports for one test (a generator for a fixture to yield from); the process-wide
    runtime and environment it sets are put back afterwards."""
    from chalicelib.local.stack import LocalOptions, LocalTally
    from chalicelib.runtime import set_runtime

    saved = dict(os.environ)
    set_runtime(None)
    with LocalTally(LocalOptions(port=free_port(), s3_port=free_port(), **options)) as tally:
        yield tally
    set_runtime(None)
    os.environ.clear()
    os.environ.update(saved)


def collect_garbage(runtime, job: str, after=None):
    """The garbage collector as it runs once the grace period has passed (by default: two hours from now, so
    every garbage record and every object written so far is old enough)."""
    import datetime as dt

    from chalicelib.engine.garbage import GarbageCollector
    from chalicelib.runtime import utc_now

    after = dt.timedelta(hours=2) if after is None else after
    return GarbageCollector(runtime.state_store, lambda name: runtime.reducer.read_live(runtime.jobs.get(name)),
                            lambda: utc_now() + after).collect(job)


@contextmanager
def http_api():
    """The Chalice app's routes over real HTTP (the server local mode runs) on a free port: its URL."""
    from chalicelib.local.stack import serve_http

    port = free_port()
    server = serve_http("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def csv_rows(s3, bucket: str = INPUT):
    """Every row of every object in the bucket (gzip ones decompressed), with the csv module."""
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        text = (gzip.decompress(body) if item["Key"].endswith(".gz") and body else body).decode()
        yield from csv.reader(io.StringIO(text))


def query_over_bucket(s3, prefix_length: int = 8) -> dict[str, Decimal]:
    """SELECT SUBSTR(sourceIP, 1, prefix_length), SUM(adRevenue) FROM uservisits GROUP BY 1, by hand."""
    totals: dict[str, Decimal] = {}
    for row in csv_rows(s3):
        totals[row[0][:prefix_length]] = totals.get(row[0][:prefix_length], Decimal(0)) + Decimal(row[3])
    return totals


@contextmanager
def requests_sent(client) -> Iterator[list[tuple[str, str]]]:
    """Every request the S3 client makes meanwhile, as (operation, key or prefix). Counted at the client, not
    at the ObjectStore: every page of a listing is a call of its own there, where a store sees one lazy list()
    however many pages it reads."""
    sent: list[tuple[str, str]] = []

    def record(params, model, **_):
        sent.append((model.name, params.get("Key") or params.get("Prefix", "")))

    client.meta.events.register("before-parameter-build.s3", record)
    try:
        yield sent
    finally:
        client.meta.events.unregister("before-parameter-build.s3", record)
