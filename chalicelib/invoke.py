"""Asynchronous Lambda invocations (`InvocationType="Event"`): range tasks to map_range, and the object
versions the reconcile finds unmapped to map_object.

Lambda queues each invocation, retries a failed one twice, then gives it up to the function's on-failure
destination (the stage's failure queue; `tally replay-failures` invokes them again); the reconcile also maps
again a version whose ranges never all land. Like the storage module for S3, this is the one place the
running service talks to the Lambda API (the deploy-time configuration is local/deploy.py's).
"""
from __future__ import annotations

import json

from botocore.exceptions import BotoCoreError, ClientError

from .engine.events import ObjectEvent, notification
from .engine.fanout import RangeTask
from .errors import DispatchFailed


class LambdaRangeInvoker:
    """A mapper's `dispatch`: one asynchronous invocation of `function_name` per range task."""

    def __init__(self, function_name: str, client):
        self.function_name, self.client = function_name, client

    def __call__(self, tasks: list[RangeTask]) -> None:
        for task in tasks:
            invoke_async(self.client, self.function_name, task.to_dict(), f"range {task.index} of {task.key}")


class LambdaObjectInvoker:
    """The reconcile's `dispatch`: one asynchronous invocation of `function_name` (map_object) per object
    version, with the one-record S3 notification S3 would have sent, so a made-up event takes the same path as
    the one it replaces: the same handler, fan-out, retries and on-failure destination."""

    def __init__(self, function_name: str, client):
        self.function_name, self.client = function_name, client

    def __call__(self, event: ObjectEvent) -> None:
        invoke_async(self.client, self.function_name, notification([event]), f"object {event.key}")


def invoke_async(client, function_name: str, payload: dict, what: str) -> None:
    try:
        client.invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode())
    except (BotoCoreError, ClientError) as exc:
        raise DispatchFailed(f"invoking {function_name} for {what}: {exc}") from exc


def make_lambda_client(region: str):
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", region_name=region, config=Config(retries={"mode": "standard",
                                                                              "max_attempts": 5}))
