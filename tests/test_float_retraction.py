"""End to end through the mapper and reducer on moto: an input object holding inf, -inf or NaN takes them along
when it is deleted or overwritten. A job of only subtractable float aggregates retracts by merging the negated
partial; before float sums counted their non-finite values apart, inf - inf left its groups at NaN for good."""
from __future__ import annotations

import json
import math

import pytest

from chalicelib.jobs import Job, JobCatalog
from reducers.tables import TABLES

from . import float_referee

LATENCY = Job(name="latency-spread", prefix="requests/", suffix=".jsonl", format=TABLES["requests"].format,
              keys={"path": "path"},
              aggregates={function: f"{function}(latency_ms)" for function in float_referee.FUNCTIONS})

GOOD = {"/a": [12.5, 30.0, 7.25], "/b": [100.0]}
BAD = {"/a": [math.inf, 4.0, -math.inf, math.nan], "/b": [6.0, 2.5], "/c": [math.inf]}
MENDED = {"/a": [4.0, 8.0], "/b": [2.5]}


@pytest.fixture
def runtime(runtime):
    """The runtime running only LATENCY: the shipped page-latency reads the same prefix but keeps a max, so it
    rebuilds from partials instead of retracting."""
    for built in ("mapper", "reducer", "reconciler", "results", "scan_results", "status"):
        runtime.__dict__.pop(built, None)
    runtime.__dict__["jobs"] = JobCatalog([LATENCY])
    return runtime


def requests(latencies: dict[str, list[float]]) -> str:
    """JSON lines as page-latency reads them; json.dumps writes inf and NaN as Infinity and NaN, which Arrow
    reads back as the float values."""
    return "".join(json.dumps({"ts": "2026-01-01 10:00:00", "method": "get", "path": path, "status": 200,
                               "latency_ms": ms, "bytes": 1}) + "\n"
                   for path, values in latencies.items() for ms in values)


def put(runtime, uploads, key: str, latencies: dict[str, list[float]]) -> None:
    runtime.mapper.handle(uploads.event(uploads.put(key, requests(latencies))))


def reduced(runtime) -> dict:
    """Reduce until nothing is pending; the served result by path."""
    while runtime.reducer.reduce_job(LATENCY).more_pending:
        pass
    _, table = runtime.results.current(LATENCY)
    return {row.pop("path"): row for row in table.to_pylist()}


def assert_recomputed(result: dict, *files: dict[str, list[float]], retracted: dict[str, list[float]]) -> None:
    """Each group is the SQL answer over the files it holds now: NULL, NaN and the infinities exactly, finite
    answers within the bound over every finite value its sums took in (`retracted` ones twice)."""
    holds: dict[str, list[float]] = {}
    for latencies in files:
        for path, values in latencies.items():
            holds.setdefault(path, []).extend(values)
    assert result.keys() == holds.keys()
    for path, values in holds.items():
        taken_in = [v for v in values + 2 * retracted.get(path, []) if math.isfinite(v)]
        for function in float_referee.FUNCTIONS:
            float_referee.assert_answer(function, result[path][function], values, taken_in)


def test_deleting_an_object_with_inf_and_nan_leaves_the_groups_as_the_remaining_object_makes_them(runtime, uploads):
    put(runtime, uploads, "requests/good.jsonl", GOOD)
    put(runtime, uploads, "requests/bad.jsonl", BAD)
    before = reduced(runtime)
    assert math.isnan(before["/a"]["sum"]) and before["/c"]["avg"] == math.inf

    runtime.mapper.handle(uploads.event(uploads.delete("requests/bad.jsonl")))
    after = reduced(runtime)

    assert after["/a"]["sum"] == 49.75 and after["/a"]["avg"] == 49.75 / 3
    assert_recomputed(after, GOOD, retracted=BAD)


def test_overwriting_an_object_with_inf_and_nan_leaves_the_groups_as_its_new_version_makes_them(runtime, uploads):
    put(runtime, uploads, "requests/good.jsonl", GOOD)
    put(runtime, uploads, "requests/bad.jsonl", BAD)
    reduced(runtime)

    put(runtime, uploads, "requests/bad.jsonl", MENDED)
    after = reduced(runtime)

    assert after["/a"]["sum"] == 61.75 and after["/a"]["var_pop"] > 0
    assert_recomputed(after, GOOD, MENDED, retracted=BAD)
