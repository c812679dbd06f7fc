"""`tally create-buckets --stage dev`: the one-time creation of a stage's input and state buckets, named in
.chalice/config.json (the same names the Lambdas and the IAM policy use). Idempotent: a bucket this account
already owns is left as it is; a name owned by someone else is an error that says so."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import TallyError

CONFIG = Path(".chalice/config.json")


@dataclass(frozen=True)
class StageBuckets:
    stage: str
    input: str
    state: str


def stage_buckets(stage: str, config_path: Path = CONFIG) -> StageBuckets:
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise TallyError(f"{config_path} not found: run from the project's root or pass --config") from None
    stages = config.get("stages", {})
    if stage not in stages:
        raise TallyError(f"no stage {stage!r} in {config_path} (stages: {', '.join(sorted(stages)) or 'none'})")
    environment = {**config.get("environment_variables", {}), **stages[stage].get("environment_variables", {})}
    try:
        return StageBuckets(stage, environment["TALLY_INPUT_BUCKET"], environment["TALLY_STATE_BUCKET"])
    except KeyError as missing:
        raise TallyError(f"stage {stage!r} in {config_path} sets no {missing.args[0]}") from None


def create_buckets(client, buckets: StageBuckets, region: str) -> dict[str, str]:
    """Create both buckets; returns {bucket: "created" | "exists"}. S3's defaults (public access blocked,
    encryption at rest) are what Tally needs. HEAD first: us-east-1 answers 200 to re-creating a bucket you
    own, so only HEAD tells "exists" from "created"."""
    outcome = {}
    for bucket in (buckets.input, buckets.state):
        if _exists(client, bucket):
            outcome[bucket] = "exists"
            continue
        arguments = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**arguments)
        except client.exceptions.BucketAlreadyExists:
            raise _taken(bucket) from None
        outcome[bucket] = "created"
    return outcome


def _exists(client, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return True
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied", "Forbidden"):
            raise _taken(bucket) from None
        raise


def _taken(bucket: str) -> TallyError:
    return TallyError(f"bucket {bucket!r} exists but is not yours (or your credentials may not read it): bucket "
                      "names are global; choose another in .chalice/config.json and the policy files")
