"""Record batches from byte streams: given these bytes, these rows come out, or BadInput says why not.

Everything reads from io.BytesIO, the same way the mapper reads an S3 body.
"""
from __future__ import annotations

import gzip
import io
import random
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.errors import BadInput, OverBudget
from chalicelib.formats import ReadStats, TextFormat, read_batches
from chalicelib.jobs import load_jobs
from chalicelib.local.datagen import uservisits_table
from chalicelib.local.referee import bdb_aggregation

MONEY = pa.schema([("who", pa.string()), ("amount", pa.decimal128(18, 6)), ("n", pa.int64())])
CSV = TextFormat("csv", MONEY)
REQUESTS = pa.schema([("path", pa.string()), ("status", pa.int64()), ("latency_ms", pa.float64())])
JSONL = TextFormat("jsonl", REQUESTS)


def read(data: bytes, fmt: TextFormat = CSV, stats: ReadStats | None = None, **options) -> list[dict]:
    """Every row read from `data`, as dicts."""
    batches = list(read_batches(io.BytesIO(data), fmt, stats=stats, **options))
    return pa.Table.from_batches(batches, schema=fmt.schema).to_pylist()


def bad_input(data: bytes, fmt: TextFormat = CSV, **options) -> BadInput:
    with pytest.raises(BadInput) as caught:
        read(data, fmt, **options)
    return caught.value


# --- CSV ---------------------------------------------------------------------------------------------------


def test_csv_without_header_reads_columns_in_declared_order():
    assert read(b"ann,1.5,3\nbob,0.000001,-4\n") == [
        {"who": "ann", "amount": Decimal("1.5"), "n": 3},
        {"who": "bob", "amount": Decimal("0.000001"), "n": -4},
    ]


def test_csv_with_header_skips_the_first_line_whatever_it_says():
    fmt = TextFormat("csv", MONEY, header=True)
    assert read(b"name,money,count\nann,1.5,3\n", fmt) == [{"who": "ann", "amount": Decimal("1.5"), "n": 3}]


def test_csv_empty_fields_are_null():
    assert read(b"ann,,\n,2,7\n") == [
        {"who": "ann", "amount": None, "n": None},
        {"who": "", "amount": Decimal("2"), "n": 7},
    ]


@pytest.mark.parametrize("delimiter", [";", "|", "\t"])
def test_csv_with_a_custom_delimiter(delimiter):
    fmt = TextFormat("csv", MONEY, delimiter=delimiter)
    data = f"ann{delimiter}1.5{delimiter}3\nb,c{delimiter}2{delimiter}4\n".encode()
    assert read(data, fmt) == [
        {"who": "ann", "amount": Decimal("1.5"), "n": 3},
        {"who": "b,c", "amount": Decimal("2"), "n": 4},
    ]


def test_csv_with_windows_line_endings_and_no_final_newline():
    assert read(b"ann,1.5,3\r\nbob,2,4") == [
        {"who": "ann", "amount": Decimal("1.5"), "n": 3},
        {"who": "bob", "amount": Decimal("2"), "n": 4},
    ]


def test_gzip_csv_reads_like_plain_csv_and_counts_compressed_bytes():
    plain = b"ann,1.5,3\nbob,2,4\n" * 50
    compressed = gzip.compress(plain)
    stats = ReadStats()
    assert read(compressed, stats=stats, compression="gzip") == read(plain)
    assert (stats.rows, stats.bytes_read) == (100, len(compressed))


# --- JSON lines --------------------------------------------------------------------------------------------


def test_json_lines_follow_the_declared_schema_ignoring_extra_fields_and_nulling_missing_ones():
    data = (b'{"path": "/a", "status": 200, "latency_ms": 12.5, "user": "ann"}\n'
            b'{"path": "/b", "status": 503}\n'
            b'{"latency_ms": 1, "path": "/c", "status": 404}\n')
    assert read(data, JSONL) == [
        {"path": "/a", "status": 200, "latency_ms": 12.5},
        {"path": "/b", "status": 503, "latency_ms": None},
        {"path": "/c", "status": 404, "latency_ms": 1.0},
    ]


def test_gzip_json_lines():
    data = b'{"path": "/a", "status": 200, "latency_ms": 1.5}\n' * 3
    assert read(gzip.compress(data), JSONL, compression="gzip") == read(data, JSONL)


def test_a_malformed_json_line_raises_bad_input():
    error = bad_input(b'{"path": "/a", "status": 200}\n{"path": "/b"\n', JSONL)
    assert "JSON parse error" in error.reason


# --- empty input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [CSV, JSONL], ids=["csv", "jsonl"])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_an_empty_object_yields_no_batches(fmt, compression):
    stats = ReadStats()
    assert list(read_batches(io.BytesIO(b""), fmt, compression=compression, stats=stats)) == []
    assert stats == ReadStats()


def test_a_header_only_csv_yields_no_rows():
    assert read(b"who,amount,n\n", TextFormat("csv", MONEY, header=True)) == []


# A gzip stream of zero bytes of content (`gzip < /dev/null`, 20 bytes long) is an empty input, not bad input.
@pytest.mark.parametrize("fmt", [CSV, JSONL], ids=["csv", "jsonl"])
def test_a_gzip_of_nothing_yields_no_rows(fmt):
    assert read(gzip.compress(b""), fmt, compression="gzip") == []


# --- statistics --------------------------------------------------------------------------------------------


def test_read_stats_count_rows_and_bytes():
    data = b"ann,1.5,3\nbob,2,4\ncat,3,5\n"
    stats = ReadStats()
    read(data, stats=stats)
    assert stats == ReadStats(bytes_read=len(data), decompressed_bytes=len(data), rows=3, bad_rows=0,
                              bad_row_examples=[])


def test_read_stats_count_the_bytes_of_text_a_compressed_object_holds():
    data = b"ann,1.5,3\nbob,2,4\ncat,3,5\n" * 1000
    stats = ReadStats()
    read(gzip.compress(data), compression="gzip", stats=stats)
    assert stats.decompressed_bytes == len(data) and stats.bytes_read == len(gzip.compress(data))


def test_text_inflating_past_the_budget_stops_the_read_with_what_it_saw():
    data = gzip.compress(b"ann,1.5,3\n" * 100_000)  # 1 MB of text in a few KB
    with pytest.raises(OverBudget, match=r"over the budget of 65,536 bytes of text") as caught:
        read(data, compression="gzip", max_decompressed=1 << 16)
    assert "TALLY_MAP_MAX_DECOMPRESSED_MB" in caught.value.reason
    assert len(read(data, compression="gzip", max_decompressed=1 << 20)) == 100_000


# --- bad input ---------------------------------------------------------------------------------------------


def test_rows_with_the_wrong_number_of_columns_are_skipped_and_counted():
    stats = ReadStats()
    rows = read(b"ann,1,1\nbob,2\ncat,3,3\ndan,4,4,4\neve,5,5\n", stats=stats)
    assert [row["who"] for row in rows] == ["ann", "cat", "eve"]
    assert stats.rows == 3
    assert stats.bad_rows == 2
    assert stats.bad_row_examples == ["row 2: expected 3 columns, got 2", "row 4: expected 3 columns, got 4"]


def test_bad_row_examples_keep_only_the_first_three():
    stats = ReadStats()
    read(b"x\n" * 10 + b"ann,1,1\n", stats=stats)
    assert stats.bad_rows == 10
    assert len(stats.bad_row_examples) == 3


# pyarrow does not propagate an exception raised inside invalid_row_handler: it prints "Exception ignored" and
# fails the read with its own parse error. The read still raises BadInput, which is what this test states; the
# lost `line` is noted in the report that came with this file.
IGNORED_HANDLER_EXCEPTION = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@IGNORED_HANDLER_EXCEPTION
def test_a_row_with_the_wrong_number_of_columns_fails_the_read_when_asked_to():
    stats = ReadStats()
    with pytest.raises(BadInput) as caught:
        read(b"ann,1,1\nbob,2\ncat,3,3\n", TextFormat("csv", MONEY, on_bad_row="fail"), stats=stats)
    assert "expected 3 columns, got 2" in caught.value.reason.lower()
    assert stats.rows == 0  # nothing was handed out before the failure


def test_a_value_that_does_not_convert_raises_bad_input_naming_column_and_row():
    error = bad_input(b"ann,1.5,3\nbob,lots,4\n")
    assert "column #1" in error.reason  # 0-based: `amount`
    assert "Row #2" in error.reason
    assert "'lots'" in error.reason
    assert error.offset == len(b"ann,1.5,3\nbob,lots,4\n")


def test_a_truncated_gzip_raises_bad_input():
    compressed = gzip.compress(b"ann,1.5,3\n" * 1000)
    error = bad_input(compressed[: len(compressed) - 10], compression="gzip")
    assert "runcated" in error.reason


def test_plain_bytes_read_as_gzip_raise_bad_input():
    assert "zlib" in bad_input(b"ann,1.5,3\n", compression="gzip").reason


@IGNORED_HANDLER_EXCEPTION  # pyarrow cannot decode a non-UTF-8 bad row to hand it to the handler
@pytest.mark.parametrize("fmt", [CSV, JSONL], ids=["csv", "jsonl"])
@pytest.mark.parametrize("garbage", [
    pytest.param(random.Random(0).randbytes(4096), id="random"),
    pytest.param(bytes(range(256)) * 16, id="every-byte"),
    pytest.param(b"\x00" * 4096, id="zeros"),
])
def test_binary_garbage_raises_bad_input_or_yields_only_bad_rows(fmt, garbage):
    stats = ReadStats()
    try:
        rows = read(garbage, fmt, stats=stats)
    except BadInput:
        return
    assert rows == [] and stats.rows == 0
    assert stats.bad_rows > 0


# --- streaming ---------------------------------------------------------------------------------------------


def _lines(count: int) -> bytes:
    return b"".join(b"user-%d,%d.%06d,%d\n" % (i, i, i * 7 % 1_000_000, i % 97 - 40) for i in range(count))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_small_blocks_stream_many_batches_that_add_up_to_the_one_shot_parse(compression):
    plain = _lines(4200)
    assert len(plain) > 100_000
    data = gzip.compress(plain) if compression else plain
    one_shot = pa.Table.from_batches(list(read_batches(io.BytesIO(data), CSV, compression=compression)))
    stats = ReadStats()
    batches = list(read_batches(io.BytesIO(data), CSV, compression=compression, stats=stats, block_size=1024))
    assert len(batches) >= len(plain) // 1024
    shortest_row = min(len(line) + 1 for line in plain.splitlines())
    assert max(batch.num_rows for batch in batches) <= 1024 // shortest_row  # a batch is at most a block
    assert pa.Table.from_batches(batches).equals(one_shot)
    assert stats.rows == one_shot.num_rows == 4200


def test_json_lines_stream_in_small_blocks_too():
    data = b"".join(b'{"path": "/p%d", "status": %d, "latency_ms": %d.5}\n' % (i, 200 + i % 3, i) for i in range(2000))
    batches = list(read_batches(io.BytesIO(data), JSONL, block_size=1024))
    assert len(batches) > 50
    assert pa.Table.from_batches(batches).equals(
        pa.Table.from_batches(list(read_batches(io.BytesIO(data), JSONL))))


@given(rows=st.lists(st.tuples(st.integers(0, 10**6), st.booleans()), max_size=300),
       block_size=st.sampled_from([64, 256, 1024]))
def test_whatever_the_block_size_exactly_the_good_rows_come_out_and_bad_ones_are_counted(rows, block_size):
    data = b"".join(b"u%d,%d,%d\n" % (i, value, value) if good else b"u%d,%d\n" % (i, value)
                    for i, (value, good) in enumerate(rows))
    stats = ReadStats()
    got = read(data, stats=stats, block_size=block_size)
    assert [row["n"] for row in got] == [value for value, good in rows if good]
    assert stats.rows == len(got)
    assert stats.bad_rows == sum(not good for _, good in rows)


# --- end to end against DuckDB ------------------------------------------------------------------------------


def test_the_bdb_2a_plan_over_streamed_batches_equals_duckdb_group_for_group(tmp_path):
    table = uservisits_table(3000, np.random.default_rng(1))
    path = tmp_path / "part-00000.csv"
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    job = load_jobs("reducers").get("bdb-agg-2a")
    plan = job.plan

    partial, batches = plan.empty(), 0
    with path.open("rb") as body:
        for batch in read_batches(body, job.format.reader(), block_size=16 << 10):
            partial = plan.merge([partial, plan.lift(batch)])
            batches += 1
    result = plan.finalize(partial)
    tally = dict(zip(result.column("sourceIP_prefix").to_pylist(), result.column("adRevenue").to_pylist()))

    assert batches > 10
    assert tally == bdb_aggregation([path], 8)
    assert sum(tally.values()) == sum(Decimal(str(v)) for v in table.column("adRevenue").to_pylist())
