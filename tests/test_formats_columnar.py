"""Parquet and zstd input: given these bytes, these rows come out, reading only what the job needs, in bounded
memory; or BadInput says why not."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from chalicelib.errors import BadInput
from chalicelib.formats import ParquetLayout, ReadStats, TextFormat, batches
from chalicelib.formats.parquet import RangeReader
from chalicelib.local.datagen import rankings_table

RANKINGS = pa.schema([("pageURL", pa.string()), ("pageRank", pa.int64()), ("avgDuration", pa.int64())])


def parquet_bytes(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def read_all(source, fmt, key: str, stats: ReadStats | None = None) -> pa.Table:
    return pa.Table.from_batches(list(batches(source, fmt, key, stats)))


@pytest.fixture(scope="module")
def rankings() -> pa.Table:
    return rankings_table(50_000, np.random.default_rng(7))


def test_parquet_round_trips_every_row_in_order(rankings):
    data = parquet_bytes(rankings, row_group_size=8_000)
    stats = ReadStats()
    assert read_all(io.BytesIO(data), ParquetLayout(RANKINGS), "rankings/a.parquet", stats).equals(rankings)
    assert stats.rows == rankings.num_rows


def test_parquet_reads_only_the_projected_columns_cast_to_the_declared_types(rankings):
    narrow = rankings.set_column(1, "pageRank", rankings.column("pageRank").cast(pa.int32()))
    table = read_all(io.BytesIO(parquet_bytes(narrow)), ParquetLayout(RANKINGS, include=("pageRank",)), "x.parquet")
    assert table.schema == pa.schema([("pageRank", pa.int64())])
    assert table.column("pageRank").equals(rankings.column("pageRank"))


def test_projection_is_pushed_down_to_the_bytes_fetched(rankings):
    data = parquet_bytes(rankings, compression="none")
    fetched = []

    def fetch(start: int, end: int) -> bytes:
        fetched.append(end - start)
        return data[start:end]

    source = RangeReader(fetch, len(data), min_fetch=64 << 10)
    table = read_all(source, ParquetLayout(RANKINGS, include=("pageRank",)), "x.parquet")
    assert table.num_rows == rankings.num_rows
    # pageURL is most of the file; reading pageRank alone fetches a small fraction of it.
    assert sum(fetched) < len(data) * 0.25, (sum(fetched), len(data))


def test_a_parquet_file_without_a_declared_column_is_bad_input(rankings):
    data = parquet_bytes(rankings.drop_columns(["pageRank"]))
    with pytest.raises(BadInput, match="no column"):
        read_all(io.BytesIO(data), ParquetLayout(RANKINGS), "x.parquet")


def test_a_parquet_column_that_does_not_convert_is_bad_input(rankings):
    data = parquet_bytes(rankings.set_column(1, "pageRank", pa.array(["high"] * rankings.num_rows)))
    with pytest.raises(BadInput, match="pageRank"):
        read_all(io.BytesIO(data), ParquetLayout(RANKINGS), "x.parquet")


@pytest.mark.parametrize("garbage", [b"", b"PAR1", b"not parquet at all, just text\n" * 100])
def test_bytes_that_are_not_parquet_are_bad_input(garbage):
    with pytest.raises(BadInput):
        read_all(io.BytesIO(garbage), ParquetLayout(RANKINGS), "x.parquet")


def test_memory_stays_bounded_by_a_row_group_for_a_many_row_group_file():
    big = rankings_table(1_000_000, np.random.default_rng(3))
    data = parquet_bytes(big, row_group_size=10_000, compression="none")
    del big
    source = RangeReader(lambda start, end: data[start:end], len(data))
    baseline, peak, rows = pa.total_allocated_bytes(), 0, 0
    for batch in batches(source, ParquetLayout(RANKINGS), "x.parquet"):
        rows += batch.num_rows
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        del batch
    assert rows == 1_000_000
    # The whole file decoded is ~70 MB of Arrow data; a row group is ~0.7 MB.
    assert peak < 16 << 20, peak


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_zstd_compressed_text_reads_like_plain_text(rankings, kind):
    if kind == "csv":
        fmt, plain = TextFormat("csv", RANKINGS), csv_bytes(rankings)
    else:
        fmt = TextFormat("jsonl", RANKINGS)
        plain = "".join(f'{{"pageURL": "{u}", "pageRank": {r}, "avgDuration": {d}}}\n' for u, r, d in zip(
            *(rankings.column(n).to_pylist() for n in RANKINGS.names))).encode()
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as compressed:
        compressed.write(plain)
    data = sink.getvalue().to_pybytes()
    stats = ReadStats()
    assert read_all(io.BytesIO(data), fmt, f"rankings/a.{kind}.zst", stats).equals(rankings)
    assert stats.bytes_read == len(data) < len(plain)


def test_a_truncated_zstd_stream_is_bad_input(rankings):
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as compressed:
        compressed.write(csv_bytes(rankings))
    data = sink.getvalue().to_pybytes()
    with pytest.raises(BadInput):
        read_all(io.BytesIO(data[: len(data) // 2]), TextFormat("csv", RANKINGS), "a.csv.zst")
