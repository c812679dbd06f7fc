"""Failed asynchronous invocations: the stage's failure queue is the mappers' on-failure destination, and
`tally replay-failures` invokes each recorded invocation again, deleting its record only once invoked — on AWS
and against local mode's dead-letter queue."""
from __future__ import annotations

import datetime as dt
import io
import json
import threading
import zipfile

import boto3
import pytest
from moto import mock_aws

from chalicelib.errors import DispatchFailed
from chalicelib.local.cli import EXIT_FAILED, EXIT_OK, main
from chalicelib.local.deploy import chalice_environment, connect_failures
from chalicelib.local.failures import FailedInvocation, failure_record, replay
from chalicelib.local.stack import DEAD_LETTERS, QUEUE, LocalOptions, LocalTally

from .conftest import INPUT, s3_record

EVENT = {"Records": [s3_record("uservisits/a b.csv", "e1", 10)]}
TASK = {"bucket": INPUT, "key": "uservisits/big.csv", "etag": "e2", "index": 1, "count": 3}
NOW = dt.datetime.now(dt.timezone.utc)


def record(function: str, payload: dict, at: dt.datetime = NOW - dt.timedelta(minutes=5)) -> str:
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
    return json.dumps(failure_record(arn, payload, RuntimeError("boom"), 3, at))


def messages_left(sqs, queue: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_a_record_reads_back_as_the_invocation_lambda_gave_up():
    failed = FailedInvocation.from_message(record("tally-dev-map_range", TASK))
    assert (failed.function, failed.handler, failed.payload) == ("tally-dev-map_range", "map_range", TASK)
    assert (failed.condition, failed.error) == ("RetriesExhausted", "boom") and failed.failed_at is not None
    with pytest.raises(ValueError):
        FailedInvocation.from_message(json.dumps(EVENT))  # an S3 event is not a record of a failure


@pytest.fixture
def aws(monkeypatch):
    """moto's Lambda without Docker (every invocation succeeds), recording what is invoked."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    invoked = []

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        invoked.append((function_name.rpartition(":function:")[2] or function_name, json.loads(body),
                        headers.get("X-Amz-Invocation-Type")))
        return b""

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="tally-dev", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("app.py", "")
        lam = boto3.client("lambda", region_name="us-east-1")
        for handler in ("map_object", "map_range"):
            lam.create_function(FunctionName=f"tally-dev-{handler}", Runtime="python3.11", Role=role,
                                Handler=f"app.{handler}", Code={"ZipFile": archive.getvalue()})
        yield boto3.client("sqs", region_name="us-east-1"), lam, invoked


def test_tally_deploy_makes_the_failure_queue_the_mappers_on_failure_destination(aws):
    sqs, lam, _ = aws
    queue = connect_failures("dev", sqs, lam, sleep=lambda _: None)
    assert queue == connect_failures("dev", sqs, lam, sleep=lambda _: None)  # idempotent
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert arn.endswith(":tally-dev-failures")
    for handler in ("map_object", "map_range"):
        config = lam.get_function_event_invoke_config(FunctionName=f"tally-dev-{handler}")
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == arn
        assert config["MaximumRetryAttempts"] == 2


def test_replay_on_aws_invokes_each_failure_of_the_stage_again_then_deletes_its_record(aws):
    sqs, lam, invoked = aws
    queue = connect_failures("dev", sqs, lam, sleep=lambda _: None)
    for body in (record("tally-dev-map_object", EVENT), record("tally-dev-map_range", TASK),
                 record("tally-prod-map_object", EVENT),  # another stage's: not replayed here
                 record("tally-dev-map_object", EVENT, at=NOW + dt.timedelta(hours=1))):  # failed since
        sqs.send_message(QueueUrl=queue, MessageBody=body)

    assert main(["replay-failures", "--stage", "dev", "--region", "us-east-1"]) == EXIT_FAILED  # one refused

    assert sorted(invoked, key=lambda call: call[0]) == [("tally-dev-map_object", EVENT, "Event"),
                                                         ("tally-dev-map_range", TASK, "Event")]
    assert messages_left(sqs, queue) == 2  # the other stage's record and the newer one


def test_a_record_whose_invocation_is_refused_stays_in_the_queue(aws):
    sqs, lam, _ = aws
    queue = connect_failures("dev", sqs, lam, sleep=lambda _: None)
    for key in ("a.csv", "b.csv"):
        sqs.send_message(QueueUrl=queue, MessageBody=record("tally-dev-map_object", {"key": key}))
    redelivered = []

    def redeliver(failed: FailedInvocation) -> None:
        if failed.payload["key"] == "a.csv":
            raise DispatchFailed("TooManyRequestsException")
        redelivered.append(failed.payload["key"])

    report = replay(sqs, queue, redeliver, NOW)

    assert (report.replayed, redelivered, len(report.errors)) == (1, ["b.csv"], 1)
    assert messages_left(sqs, queue) == 1


def test_replay_against_local_mode_puts_its_dead_letters_back_on_its_event_queue(s3_server):
    from concurrent.futures import Future

    endpoint = s3_server.meta.endpoint_url
    stack = LocalTally(LocalOptions(s3_endpoint=endpoint, workers=1))
    sqs = stack.client("sqs")
    stack._dead_letters = sqs.create_queue(QueueName=DEAD_LETTERS)["QueueUrl"]
    events = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    for handler, payload in (("map_object", EVENT), ("map_range", TASK)):
        failed = Future()
        failed.set_exception(RuntimeError("state bucket unreachable"))
        stack._in_flight.acquire()
        stack._mapped(handler, payload, 3, failed)  # the third failure: to the dead-letter queue

    assert main(["replay-failures", "--endpoint", endpoint]) == EXIT_OK
    assert messages_left(sqs, stack._dead_letters) == 0

    pump = threading.Thread(target=stack._pump, args=(events,))
    pump.start()
    replayed = [stack._events.get(timeout=10) for _ in range(2)]
    stack._stop.set()
    pump.join()
    assert sorted(replayed, key=lambda item: item[0]) == [("map_object", EVENT, 1), ("map_range", TASK, 1)]


def test_chalice_runs_without_the_callers_tally_settings():
    # Chalice imports app.py with the caller's environment under the stage's: a shell's TALLY_API_AUTH=none
    # (local mode's) would otherwise deploy an API without authorization for a stage that does not set it.
    assert chalice_environment({"TALLY_API_AUTH": "none", "PATH": "/bin"}) == {"PATH": "/bin"}
