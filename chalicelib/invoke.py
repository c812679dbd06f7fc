"""Range tasks to the map_range Lambda, invoked asynchronously (`InvocationType="Event"`).

Lambda queues each invocation, retries a failed one twice, then gives it up (to the function's on-failure
destination, if one is configured); the reconcile maps again a version whose ranges never all land. Like the
storage module for S3, this is the one place that talks to the Lambda API.
"""
from __future__ import annotations

import json

from botocore.exceptions import BotoCoreError, ClientError

from .engine.fanout import RangeTask
from .errors import DispatchFailed


class LambdaRangeInvoker:
    """A mapper's `dispatch`: one asynchronous invocation of `function_name` per range task."""

    def __init__(self, function_name: str, client):
        self.function_name, self.client = function_name, client

    def __call__(self, tasks: list[RangeTask]) -> None:
        for task in tasks:
            try:
                self.client.invoke(FunctionName=self.function_name, InvocationType="Event",
                                   Payload=json.dumps(task.to_dict()).encode())
            except (BotoCoreError, ClientError) as exc:
                raise DispatchFailed(f"invoking {self.function_name} for range {task.index} of {task.key}: "
                                     f"{exc}") from exc


def make_lambda_client(region: str):
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", region_name=region, config=Config(retries={"mode": "standard",
                                                                              "max_attempts": 5}))
