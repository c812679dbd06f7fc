"""The only reader of environment variables. Validated once, at the edge; everything else gets a Settings."""
from __future__ import annotations

import os
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidSettings

_PREFIX = "TALLY_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_bucket: str = Field(default="tally-input", min_length=3, max_length=63)
    state_bucket: str = Field(default="tally-state", min_length=3, max_length=63)
    # Set only in local mode or against another S3-compatible store; on AWS boto3 finds the endpoint itself.
    s3_endpoint: str | None = None
    region: str = "us-east-1"
    jobs_package: str = "reducers"
    # Comma-separated job names to run; empty runs every job of jobs_package (a stage or a local run may
    # serve a subset).
    jobs: str = ""
    # Merge at most this many partials per reducer run so one run stays inside a Lambda's time and memory.
    reduce_batch: int = Field(default=500, ge=1)
    # ... and partials of at most this many groups (one job's run; jobs run side by side): merging holds about
    # 250 bytes a group at its peak (2c, measured), so a backlog of high-cardinality partials is merged a
    # bounded batch at a time instead of exhausting a reducer's memory, then failing the same way every run.
    reduce_max_groups: int = Field(default=2_000_000, ge=1)
    # Jobs reduced side by side in one run (threads: Arrow and boto3 release the GIL).
    reduce_parallelism: int = Field(default=4, ge=1, le=64)
    # A sharded result starts in one object and doubles its shards (up to the job's `shards`) when they would
    # hold more groups than this each: every shard costs a merge call and a PUT per commit, which small results
    # do not repay.
    shard_groups: int = Field(default=1 << 20, ge=1)
    # A mapper writes its partial in parts of at most this many groups: its memory stays bounded even when
    # nearly every row is its own group.
    map_max_groups: int = Field(default=500_000, ge=1)
    # Per object version and job: after this many failed attempts (an exception, or killed by a timeout or out
    # of memory) the version is quarantined for the job instead of being mapped again (engine/attempts.py).
    map_max_attempts: int = Field(default=3, ge=1, le=100)
    # A mapper that has mapped one object version (or range) for this long quarantines it, checked between
    # batches: under Lambda's 900 s with room for the last batch and the quarantine, so an object too slow to
    # map ends cleanly instead of being killed three times. Also the age after which an attempt that never
    # finished counts as failed.
    map_max_seconds: float = Field(default=720, gt=0, lt=900)
    # A text object decompressing to more than this (MiB) is quarantined: a decompression bomb, or a .gz too
    # big for one mapper (compressed objects are never split). Above what the time budget could parse anyway.
    map_max_decompressed_mb: float = Field(default=64 << 10, gt=0)
    # Ranged GETs a mapper keeps in flight on a big object: one S3 stream gives a Lambda 50-90 MB/s, a third of
    # what the kernel parses. 1 reads one stream (local mode: loopback has no per-stream limit, and moto's
    # ranged GET costs as much as reading the whole object).
    read_streams: int = Field(default=4, ge=1, le=16)
    # An uncompressed CSV / JSON-lines object larger than this is mapped as ranges of this size, in parallel
    # (one Lambda each); 0 maps every object whole. A float, so tests and benchmarks can split small objects.
    split_mb: float = Field(default=256, ge=0)
    # The function range tasks are invoked on (asynchronously). On Lambda it defaults to the running
    # function's sibling `<app>-<stage>-map_range`; unset elsewhere, where ranges are mapped in-process.
    range_function: str | None = None
    # How long after a run stops needing an object it may be deleted (engine/garbage.py): longer than two
    # Lambda lifetimes, so no run that could still read or commit it is running.
    garbage_grace_minutes: int = Field(default=60, ge=31)
    # The function the reconcile hands the object versions it finds unmapped to (asynchronously, one S3 event
    # record each). On Lambda it defaults to the sibling `<app>-<stage>-map_object`; unset elsewhere, where the
    # reconcile maps them in-process (tests, `tally backfill`) or local mode queues them for its workers.
    object_function: str | None = None
    # How often mappers, reducers and the API list the views created at run time again (engine/views.py): a new
    # view is picked up within this many seconds. Local mode: 0, at once.
    view_refresh_seconds: float = Field(default=60, ge=0, le=900)
    log_level: str = "INFO"
    # "json": Powertools' structured lines and CloudWatch EMF metrics (Lambda); "text": one readable line per
    # log record and per metric set (local mode's terminal). Same records, same keys.
    log_format: Literal["json", "text"] = "json"
    # Schedules, read when app.py is imported (EventBridge takes the rate at deploy time): set per stage.
    reduce_every_minutes: int = Field(default=1, ge=1, le=1440)
    reconcile_every_minutes: int = Field(default=15, ge=1, le=1440)
    # How the deployed HTTP API is protected: AWS_IAM (SigV4-signed requests), an API Gateway API key, or
    # nothing. The default is the safe one, so a stage that forgets the variable is not served to anyone; "none"
    # is for local mode (it listens on loopback) and is refused on Lambda (from_env).
    api_auth: Literal["iam", "api_key", "none"] = "iam"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        raw = {
            name: environ[_PREFIX + name.upper()]
            for name in cls.model_fields
            if _PREFIX + name.upper() in environ
        }
        if "region" not in raw and environ.get("AWS_REGION"):
            raw["region"] = environ["AWS_REGION"]
        for field, handler in (("range_function", "map_range"), ("object_function", "map_object")):
            if field not in raw and environ.get("AWS_LAMBDA_FUNCTION_NAME"):
                raw[field] = sibling_function(environ["AWS_LAMBDA_FUNCTION_NAME"], handler)
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            raise InvalidSettings(f"invalid TALLY_* environment: {exc}") from exc
        if settings.api_auth == "none" and environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            raise InvalidSettings(
                "TALLY_API_AUTH=none on Lambda would serve every job's results to anyone who finds the URL: it "
                "is for local mode only; set iam (the default) or api_key in the stage's environment")
        return settings

    @property
    def map_max_decompressed_bytes(self) -> int:
        return int(self.map_max_decompressed_mb * (1 << 20))

    @property
    def split_bytes(self) -> int | None:
        """The range size objects are split into, or None: never split."""
        return int(self.split_mb * (1 << 20)) or None

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process (local mode's workers)."""
        return {
            _PREFIX + name.upper(): str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


def sibling_function(function_name: str, handler: str) -> str:
    """Chalice names a stage's functions `<app>-<stage>-<handler>`: the same app and stage, another handler."""
    prefix, _, _ = function_name.rpartition("-")
    return f"{prefix}-{handler}" if prefix else handler
