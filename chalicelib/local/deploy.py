"""`tally package` and `tally deploy`: Chalice's two routes to a stage, plus what Chalice cannot declare.

Chalice 1.34 has no setting for a function's on-failure destination (nor for an SQS queue that is not an event
source), and its terraform output takes no --merge-template. So each route adds it its own way, with the same
names (policies.py) and the same settings:
- `tally package --stage S OUT` runs `chalice package --pkg-format terraform` and writes `failures.tf.json`
  beside `chalice.tf.json` (terraform reads every *.tf.json of a directory as one configuration): the queue
  and map_object's and map_range's `aws_lambda_function_event_invoke_config`;
- `tally deploy --stage S` runs `chalice deploy`, then creates the queue (if absent) and puts the same event
  invoke configuration through the Lambda API. `chalice deploy` never touches that configuration, so it
  survives later deploys; running it again is harmless.

Both run Chalice with no TALLY_* variable from the caller's environment: Chalice imports app.py with the
caller's environment overlaid by the stage's, so a TALLY_API_AUTH=none left in a shell (local mode's) would
deploy an API Gateway without authorization for a stage that does not set it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import TallyError
from .policies import MAP_OBJECT, MAP_RANGE, failure_queue, function_name

DESTINED = (MAP_OBJECT, MAP_RANGE)  # the functions invoked asynchronously
RETRIES = 2  # Lambda's default, stated: three attempts, then the destination
MAX_EVENT_AGE_SECONDS = 6 * 3600  # Lambda's default and maximum
RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: a failure waits two weeks for `tally replay-failures`


def terraform_failures(stage: str) -> dict:
    """The failure queue and the mappers' on-failure destinations, as terraform JSON that refers to the
    resources chalice.tf.json declares."""
    configs = {
        handler: {
            "function_name": f"${{aws_lambda_function.{handler}.function_name}}",
            "maximum_retry_attempts": RETRIES,
            "maximum_event_age_in_seconds": MAX_EVENT_AGE_SECONDS,
            "destination_config": {"on_failure": {"destination": "${aws_sqs_queue.failures.arn}"}},
            # Lambda checks that the function's role may send to the destination when this is created.
            "depends_on": [f"aws_iam_role_policy.{handler}_role"],
        }
        for handler in DESTINED
    }
    return {
        "resource": {
            "aws_sqs_queue": {"failures": {"name": failure_queue(stage),
                                           "message_retention_seconds": RETENTION_SECONDS}},
            "aws_lambda_function_event_invoke_config": configs,
        },
        "output": {"FailureQueueUrl": {"value": "${aws_sqs_queue.failures.id}"}},
    }


def connect_failures(stage: str, sqs, lambda_client, sleep: Callable[[float], None] = time.sleep,
                     attempts: int = 10) -> str:
    """The same as terraform_failures, through the APIs, for a stage `chalice deploy` made; returns the queue's
    URL. Idempotent."""
    from botocore.exceptions import ClientError

    queue_url = sqs.create_queue(QueueName=failure_queue(stage),
                                 Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for handler in DESTINED:
        for attempt in range(1, attempts + 1):
            try:
                lambda_client.put_function_event_invoke_config(
                    FunctionName=function_name(stage, handler), MaximumRetryAttempts=RETRIES,
                    MaximumEventAgeInSeconds=MAX_EVENT_AGE_SECONDS,
                    DestinationConfig={"OnFailure": {"Destination": queue_arn}})
                break
            except ClientError as error:
                # A role chalice deploy just made may not be visible to Lambda yet: it then says the role
                # cannot send to the queue. IAM propagates within seconds.
                if error.response["Error"]["Code"] != "InvalidParameterValueException" or attempt == attempts:
                    raise
                sleep(3.0)
    return queue_url


def chalice_environment(environ=None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items() if not name.startswith("TALLY_")}


def _chalice(*arguments: str, project: Path) -> None:
    chalice = Path(sys.executable).with_name("chalice")
    result = subprocess.run([str(chalice), *arguments], cwd=project, env=chalice_environment())
    if result.returncode != 0:
        raise TallyError(f"chalice {arguments[0]} exited with {result.returncode}")


def package(stage: str, out: Path, project: Path = Path(".")) -> Path:
    _chalice("package", "--pkg-format", "terraform", "--stage", stage, str(out.resolve()), project=project)
    written = out / "failures.tf.json"
    written.write_text(json.dumps(terraform_failures(stage), indent=2) + "\n")
    return written


def deploy(stage: str, region: str | None, project: Path = Path(".")) -> str:
    import boto3

    _chalice("deploy", "--stage", stage, project=project)
    session = boto3.session.Session(region_name=region)
    return connect_failures(stage, session.client("sqs"), session.client("lambda"))
