"""A value that does not convert, through the engine: under on_bad_row="skip" its row is skipped and every other
row of the object is mapped (the mapper reads the object again past it, starting over), the reducer keeps the
count and the first rows' lines and reasons in the ledger, and status lists the object with them; under
"fail" the object is quarantined with the line."""
from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from decimal import Decimal

import numpy as np
import pyarrow.csv as pa_csv
import pytest

from chalicelib.aggregation.codec import decode, encode
from chalicelib.engine import layout
from chalicelib.engine.changes import combine_ranges
from chalicelib.engine.reducer import _LEDGER_FINGERPRINT
from chalicelib.formats.ranges import split_ranges
from chalicelib.jobs import JobCatalog, load_jobs
from chalicelib.local.datagen import uservisits_table
from chalicelib.runtime import Runtime
from chalicelib.settings import Settings

from .conftest import INPUT, STATE, Uploader

JOB = "bdb-agg-2a"
STRICT = "bdb-agg-2a-strict"  # the same query over strict/, under on_bad_row="fail"
REASON = "adRevenue: cannot convert '12.5x' to decimal128(18, 6)"


def catalog() -> JobCatalog:
    job = load_jobs("reducers").get(JOB)
    strict = job.model_copy(update={"name": STRICT, "prefix": "strict/",
                                    "format": job.format.model_copy(update={"on_bad_row": "fail"})})
    return JobCatalog([job, strict])


def make_runtime(s3, **settings) -> Runtime:
    runtime = Runtime(Settings(input_bucket=INPUT, state_bucket=STATE, **settings), s3_client=s3)
    runtime.__dict__["jobs"] = catalog()  # before the mapper and reducer are built
    return runtime


@pytest.fixture
def runtime(s3) -> Runtime:
    return make_runtime(s3)


@pytest.fixture
def uploads(s3) -> Uploader:
    return Uploader(s3)


def uservisits(count: int, bad_line: int, seed: int = 3) -> tuple[bytes, dict[str, Decimal]]:
    """`count` BDB uservisits rows, the one on `bad_line` (1-based) with adRevenue "12.5x"; and the 2a result of
    the other rows, computed here with Python's decimals."""
    out = io.BytesIO()
    pa_csv.write_csv(uservisits_table(count, np.random.default_rng(seed)), out,
                     pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    lines = out.getvalue().splitlines(keepends=True)
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for number, line in enumerate(lines, 1):
        fields = line.decode().split(",")
        if number == bad_line:
            fields[3] = "12.5x"
            lines[number - 1] = ",".join(fields).encode()
        else:
            expected[fields[0][:8]] += Decimal(fields[3])
    return b"".join(lines), dict(expected)


def served(runtime: Runtime, job: str = JOB) -> dict[str, Decimal]:
    _, table = runtime.results.current(runtime.jobs.get(job))
    return dict(zip(table.column("sourceIP_prefix").to_pylist(), table.column("adRevenue").to_pylist()))


def reduce(runtime: Runtime, job: str = JOB):
    return runtime.reducer.reduce_job(runtime.jobs.get(job))


def status(runtime: Runtime, job: str = JOB) -> dict:
    return runtime.status.status(runtime.jobs.get(job))


@pytest.mark.parametrize("compress", [False, True], ids=["csv", "csv.gz"])
def test_a_value_that_does_not_convert_costs_its_row_not_its_file(runtime, uploads, compress):
    data, expected = uservisits(20_000, bad_line=12_345)
    key = "uservisits/visits.csv" + (".gz" if compress else "")
    record = uploads.put(key, data, compress=compress)

    [outcome] = runtime.mapper.handle(uploads.event(record))
    reduce(runtime)

    assert (outcome.outcome, outcome.rows) == ("mapped", 19_999)
    assert served(runtime) == expected  # exact: every other row, each once
    report = status(runtime)
    assert report["objects"]["quarantined"] == 0 and report["quarantined"] == []
    assert report["bad_rows_skipped"] == 1
    assert report["bad_rows"] == [{"key": key, "etag": record["s3"]["object"]["eTag"], "bad_rows": 1,
                                   "examples": [f"line 12345: {REASON}"]}]


def test_reading_again_counts_no_row_twice_though_the_first_read_spilled_parts(runtime, uploads):
    runtime.mapper.max_groups, runtime.mapper.block_size = 2_000, 64 << 10
    data, expected = uservisits(20_000, bad_line=19_990)  # late: the typed read spills parts before it
    written, put = [], runtime.state_store.put

    def recording(key, *args, **kwargs):
        written.append(key)
        return put(key, *args, **kwargs)

    runtime.state_store.put = recording
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/visits.csv", data)))

    [marker_key] = [o.key for o in runtime.state_store.list(layout.inbox_prefix(JOB))]
    marker = json.loads(runtime.state_store.get(marker_key)[0])
    parts = sorted(o.key for o in runtime.state_store.list(layout.parts_prefix(JOB)))
    assert len([key for key in written if key.startswith(layout.parts_prefix(JOB))]) > len(parts) > 1
    assert parts == sorted(marker["parts"])  # the first read's parts are gone
    reduce(runtime)
    assert served(runtime) == expected
    assert status(runtime)["bad_rows"][0]["examples"] == [f"line 19990: {REASON}"]


def test_under_fail_the_object_is_quarantined_with_the_line_and_the_reason(runtime, uploads):
    data, _ = uservisits(3_000, bad_line=2_024)
    [outcome] = runtime.mapper.handle(uploads.event(uploads.put("strict/visits.csv", data)))
    reduce(runtime, STRICT)

    assert outcome.outcome == "quarantined"
    [entry] = status(runtime, STRICT)["quarantined"]
    assert (entry["key"], entry["line"], entry["reason"]) == ("strict/visits.csv", 2024, f"line 2024: {REASON}")
    assert served(runtime, STRICT) == {}


def test_a_large_object_mapped_in_ranges_reports_the_range_and_the_line_in_it(s3, uploads):
    split = 64 << 10
    runtime = make_runtime(s3, split_mb=split / (1 << 20))
    data, expected = uservisits(6_000, bad_line=3_210)
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/big.csv", data)))
    reduce(runtime)

    assert served(runtime) == expected
    [listed] = status(runtime)["bad_rows"]
    [example] = listed["examples"]
    found = re.fullmatch(rf"range (\d+) of (\d+), line (\d+): {re.escape(REASON)}", example)
    ranges = split_ranges(len(data), split)
    assert found and int(found[2]) == len(ranges) > 2
    # The line the report names, counted from the first line the range owns, is the bad one.
    start = ranges[int(found[1]) - 1][0]
    first = 0 if start == 0 else data.index(b"\n", start - 1) + 1
    bad_at = first + sum(len(line) for line in data[first:].splitlines(keepends=True)[: int(found[3]) - 1])
    assert data[bad_at:].split(b"\n", 1)[0].split(b",")[3] == b"12.5x"


def test_range_markers_combine_their_examples_in_range_order_up_to_five():
    def marker(index: int, examples: list[str]) -> dict:
        return {"kind": "put", "key": "k", "etag": "e", "contribution": "k@e", "range": [index, 3],
                "id": f"k@e.r{index}of3.a1", "rows": 1, "bad_rows": len(examples), "bad_row_examples": examples,
                "parts": []}

    [whole], _ = combine_ranges([marker(2, ["c1", "c2", "c3"]), marker(0, ["a1"]), marker(1, ["b1", "b2"])])
    assert whole["bad_rows"] == 6
    assert whole["bad_row_examples"] == ["a1", "b1", "b2", "c1", "c2"]


def test_a_ledger_written_before_examples_were_kept_still_reads_and_gets_them_for_new_objects(s3, uploads):
    runtime = make_runtime(s3)
    old, _ = uservisits(100, bad_line=7)
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/old.csv", old)))
    reduce(runtime)
    # Rewrite the committed ledger as the code before this column wrote it.
    manifest, _ = runtime.reducer.read_manifest(runtime.jobs.get(JOB))
    ledger, _ = decode(runtime.state_store.get(manifest.ledger_key)[0], _LEDGER_FINGERPRINT)
    runtime.state_store.put(manifest.ledger_key, encode(ledger.drop_columns(["bad_row_examples"]),
                                                        _LEDGER_FINGERPRINT))

    runtime = make_runtime(s3)  # a cold reducer: nothing cached
    before = status(runtime)
    assert before["bad_rows_skipped"] == 1
    assert before["bad_rows"] == [{"key": "uservisits/old.csv", "etag": before["bad_rows"][0]["etag"], "bad_rows": 1,
                                   "examples": []}]
    new, _ = uservisits(100, bad_line=9, seed=4)
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/new.csv", new)))
    reduce(runtime)
    assert [(o["key"], o["examples"]) for o in status(runtime)["bad_rows"]] == [
        ("uservisits/new.csv", [f"line 9: {REASON}"]), ("uservisits/old.csv", [])]
