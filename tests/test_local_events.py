"""Local mode's event delivery, as Lambda's asynchronous invocation does it: a failed mapper is tried again,
three attempts in all, then its event goes to the dead-letter queue. And the reducer's timer: it runs as soon
as the mappers fall idle, not only at its next tick."""
from __future__ import annotations

import threading
from concurrent.futures import Future

import time

from chalicelib.local.client import TallyClient
from chalicelib.local.datagen import write_uservisits
from chalicelib.local.failures import FailedInvocation
from chalicelib.local.stack import DEAD_LETTERS, LocalOptions, LocalTally
from tests.conftest import running_local_tally

EVENT = {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "tally-input"},
                                                      "object": {"key": "uservisits/a.csv", "eTag": "e"}}}]}


def succeeded() -> Future:
    future = Future()
    future.set_result([])
    return future


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
    record = FailedInvocation.from_message(message["Body"])  # the record Lambda sends its destination
    assert (record.handler, record.payload, record.condition) == ("map_object", EVENT, "RetriesExhausted")
    assert record.error == "state bucket unreachable" and stack._events.empty()


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
    record = FailedInvocation.from_message(message["Body"])
    assert (record.handler, record.payload) == ("map_range", task) and stack._events.empty()


class BrokenPool:
    """A pool one of whose workers died: it takes no more work."""

    def submit(self, *args):
        from concurrent.futures.process import BrokenProcessPool

        raise BrokenProcessPool("a child process terminated abruptly")

    def shutdown(self, **kwargs):
        pass


class RecordingPool:
    def __init__(self):
        self.submitted = threading.Event()

    def submit(self, function, *args):
        self.submitted.set()
        return Future()

    def shutdown(self, **kwargs):
        pass


def test_a_mapper_process_that_dies_is_replaced_and_the_next_invocation_runs(s3_server):
    """A worker killed mid-map (out of memory) breaks the process pool: the invocations it held fail and are
    retried as on Lambda, where only that invocation dies; the rest must not stop with it."""
    stack = stack_on(s3_server)
    stack.pool, fresh = BrokenPool(), RecordingPool()
    stack._new_pool = lambda: fresh
    stack._events.put(("map_object", EVENT, 2))  # the retry of an invocation the dead worker held

    dispatcher = threading.Thread(target=stack._dispatch_forever, daemon=True)
    dispatcher.start()
    try:
        assert fresh.submitted.wait(timeout=10)
    finally:
        stack._stop.set()
        dispatcher.join(timeout=10)
    assert stack.pool is fresh and dispatcher.is_alive() is False


def test_the_reducer_is_woken_when_the_last_running_mapper_finishes_and_no_event_waits(s3_server):
    stack = stack_on(s3_server)
    for _ in range(2):  # as the dispatcher does for each invocation it hands to the pool
        stack._in_flight.acquire()
        stack._running += 1

    stack._mapped("map_object", EVENT, 1, succeeded())
    assert not stack._reducer_wake.is_set()  # the other mapper still runs

    stack._mapped("map_object", EVENT, 1, succeeded())
    assert stack._reducer_wake.is_set()


def test_the_reducer_is_not_woken_while_events_wait_for_a_mapper(s3_server):
    stack = stack_on(s3_server)
    stack._in_flight.acquire()
    stack._running += 1
    stack._events.put(("map_object", EVENT, 1))

    stack._mapped("map_object", EVENT, 1, succeeded())

    assert not stack._reducer_wake.is_set()


def test_results_are_served_once_the_mappers_are_idle_long_before_the_next_reducer_tick(tmp_path):
    """The timer says ten minutes; the uploaded file is merged within seconds of being mapped."""
    [path] = write_uservisits(tmp_path, total_bytes=64 << 10, file_bytes=64 << 10, seed=5)
    for tally in running_local_tally(workers=1, reduce_every=600.0, jobs="bdb-agg-2a"):
        api = TallyClient(tally.api_url)
        tally.client().upload_file(str(path), "tally-input", "uservisits/a.csv")
        deadline = time.monotonic() + 60
        while not (status := api.status("bdb-agg-2a"))["objects"]["merged"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status["objects"]["merged"] == 1 and status["idle"]
        assert tally.errors == []
