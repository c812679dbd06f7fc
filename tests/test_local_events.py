"""Local mode's event delivery, as Lambda's asynchronous invocation does it: a failed mapper is tried again,
three attempts in all, then its event goes to the dead-letter queue."""
from __future__ import annotations

import json
from concurrent.futures import Future

from chalicelib.local.stack import DEAD_LETTERS, LocalOptions, LocalTally

EVENT = {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "tally-input"},
                                                      "object": {"key": "uservisits/a.csv", "eTag": "e"}}}]}


def failed() -> Future:
    future = Future()
    future.set_exception(RuntimeError("state bucket unreachable"))
    return future


def stack_on(s3_server) -> LocalTally:
    stack = LocalTally(LocalOptions(s3_endpoint=s3_server.meta.endpoint_url, workers=1))
    stack._dead_letters = stack.client("sqs").create_queue(QueueName=DEAD_LETTERS)["QueueUrl"]
    return stack


def test_a_failed_mapper_is_tried_again_with_the_same_event(s3_server):
    stack = stack_on(s3_server)
    stack._in_flight.acquire()  # as the dispatcher does for each invocation

    stack._mapped("map_object", EVENT, 1, failed())

    assert stack._events.get(timeout=5) == ("map_object", EVENT, 2)
    assert stack.errors == ["map_object: RuntimeError: state bucket unreachable"]


def test_after_the_third_failure_the_event_is_a_dead_letter(s3_server):
    stack = stack_on(s3_server)
    stack._in_flight.acquire()

    stack._mapped("map_object", EVENT, 3, failed())

    sqs = stack.client("sqs")
    [message] = sqs.receive_message(QueueUrl=stack._dead_letters, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == EVENT and stack._events.empty()


def test_a_failed_range_is_tried_again_as_a_range_then_dead_lettered(s3_server):
    """A large object's range task is invoked like an event: the same retries, the same dead-letter queue."""
    stack = stack_on(s3_server)
    task = {"key": "uservisits/big.csv", "index": 2, "count": 4}
    stack._in_flight.acquire()
    stack._mapped("map_range", task, 1, failed())
    assert stack._events.get(timeout=5) == ("map_range", task, 2)

    stack._in_flight.acquire()
    stack._mapped("map_range", task, 3, failed())
    [message] = stack.client("sqs").receive_message(QueueUrl=stack._dead_letters, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == task and stack._events.empty()
