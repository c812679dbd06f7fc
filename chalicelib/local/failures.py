"""Failed asynchronous invocations: what Lambda (or local mode) records of one, and `tally replay-failures`.

Lambda tries an asynchronous invocation three times (S3's event to map_object, a range task to map_range, the
reconcile's hand-over to map_object); then it sends a record of it to the function's on-failure destination,
the stage's failure queue (`tally-<stage>-failures`, see deploy.py): the original payload under
`requestPayload`, beside the function, the condition and the error. Local mode writes the same record to
`tally-events-dlq`. Replaying takes the records off the queue and hands each payload to its function again,
deleting a record only once its invocation was accepted: a failure to invoke leaves it for the next replay.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DispatchFailed
from .policies import MAP_OBJECT, MAP_RANGE

log = logging.getLogger("tally.failures")
REPLAYED = (MAP_OBJECT, MAP_RANGE)  # the functions invoked asynchronously, so the only ones with records


@dataclass(frozen=True)
class FailedInvocation:
    function: str  # the function's name, without a version qualifier
    payload: dict[str, Any]
    failed_at: dt.datetime | None = None
    condition: str | None = None  # RetriesExhausted, EventAgeExceeded
    error: str | None = None

    @property
    def handler(self) -> str:
        """Chalice names a function `<app>-<stage>-<handler>`; handler names have no hyphen."""
        return self.function.rpartition("-")[2]

    @classmethod
    def from_message(cls, body: str) -> "FailedInvocation":
        """Reads an on-failure destination record; ValueError if the message is something else."""
        try:
            record = json.loads(body)
            context, payload = record["requestContext"], record["requestPayload"]
            function = context["functionArn"].split(":function:", 1)[1].split(":", 1)[0]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a Lambda on-failure record: {body[:200]!r}") from exc
        if not isinstance(payload, dict):
            raise ValueError(f"the failed invocation's payload is not an object: {body[:200]!r}")
        failed_at = dt.datetime.fromisoformat(record["timestamp"]) if record.get("timestamp") else None
        response = record.get("responsePayload")
        error = response.get("errorMessage") if isinstance(response, dict) else None
        return cls(function, payload, failed_at, context.get("condition"), error)


def failure_record(function_arn: str, payload: dict, error: BaseException, attempts: int,
                   at: dt.datetime) -> dict:
    """The record Lambda sends to an on-failure destination once it gives an invocation up."""
    return {
        "version": "1.0",
        "timestamp": at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {"requestId": "", "functionArn": function_arn + ":$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": attempts},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": str(error), "errorType": type(error).__name__},
    }


@dataclass
class ReplayReport:
    replayed: int = 0
    later: int = 0  # recorded after the replay began: left for the next one
    errors: list[str] = field(default_factory=list)  # left in the queue

    @property
    def ok(self) -> bool:
        return not self.errors


def replay(sqs, queue_url: str, redeliver: Callable[[FailedInvocation], None], started: dt.datetime,
           visibility_seconds: int = 300) -> ReplayReport:
    """Hands every record in the queue back to its function, in the order SQS returns them, and deletes it
    once `redeliver` returned. A record it cannot replay stays in the queue (hidden for `visibility_seconds`,
    and not tried twice in one run), so the loop ends when nothing new is left. A replayed invocation that
    fails again comes back as a new record dated after `started`: it is left for the next replay rather than
    retried in a loop."""
    report, seen = ReplayReport(), set()
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=visibility_seconds).get("Messages", [])
        messages = [m for m in messages if m["MessageId"] not in seen]
        if not messages:
            return report
        for message in messages:
            seen.add(message["MessageId"])
            try:
                failed = FailedInvocation.from_message(message["Body"])
                if failed.failed_at is not None and failed.failed_at > started:
                    report.later += 1
                    continue
                redeliver(failed)
            except (ValueError, DispatchFailed) as exc:
                log.warning("not replayed: %s", exc)
                report.errors.append(str(exc))
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.replayed += 1


class InvokeAgain:
    """Redelivery on AWS: the same asynchronous invocation of the same function, if it is one of `functions`
    (a record naming another function is not this stage's)."""

    def __init__(self, client, functions: set[str]):
        self.client, self.functions = client, functions

    def __call__(self, failed: FailedInvocation) -> None:
        from ..invoke import invoke_async

        if failed.function not in self.functions:
            raise DispatchFailed(f"{failed.function} is not one of {sorted(self.functions)}")
        invoke_async(self.client, failed.function, failed.payload, f"a replayed {failed.handler} invocation")


class SendToLocalEvents:
    """Redelivery in local mode: an invocation message on local mode's event queue, which its pump hands to the
    worker pool like S3's events, with the same three attempts."""

    def __init__(self, sqs, queue_url: str):
        self.sqs, self.queue_url = sqs, queue_url

    def __call__(self, failed: FailedInvocation) -> None:
        if failed.handler not in REPLAYED:
            raise DispatchFailed(f"{failed.function} is not a mapper")
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(local_invocation(failed.handler,
                                                                                               failed.payload)))


def local_invocation(handler: str, payload: dict) -> dict:
    """A message on local mode's event queue asking for an asynchronous invocation of `handler`."""
    return {"invoke": handler, "payload": payload}
