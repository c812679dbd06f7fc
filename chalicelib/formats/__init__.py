"""Record batches from a byte stream: CSV or JSON lines, optionally gzip-compressed.

Readers take any `IO[bytes]` (an S3 body, a file, a BytesIO in a test) and stream it in blocks, so memory is
bounded by the block size, never by the object's size. What cannot be parsed raises BadInput with the reason.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import IO, Iterator, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from ..errors import BadInput

BLOCK_SIZE = 8 << 20
_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip"}


@dataclass(frozen=True)
class TextFormat:
    kind: Literal["csv", "jsonl"]
    schema: pa.Schema
    header: bool = False
    delimiter: str = ","
    on_bad_row: Literal["skip", "fail"] = "skip"


@dataclass
class ReadStats:
    """What a read saw; the mapper reports it in the partial's metadata and in status."""

    bytes_read: int = 0
    rows: int = 0
    bad_rows: int = 0
    bad_row_examples: list[str] = field(default_factory=list)
    first_bad_line: int | None = None


def compression_of(key: str) -> str | None:
    for extension, codec in _COMPRESSIONS.items():
        if key.lower().endswith(extension):
            return codec
    return None


def strip_compression(key: str) -> str:
    for extension in _COMPRESSIONS:
        if key.lower().endswith(extension):
            return key[: -len(extension)]
    return key


class _CountingReader(io.RawIOBase):
    """Counts the raw (compressed) bytes consumed, for throughput figures and error positions."""

    def __init__(self, stream: IO[bytes], stats: ReadStats):
        self._stream, self._stats = stream, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self._stats.bytes_read += len(data)
        return len(data)


class _Prepended(io.RawIOBase):
    """A stream whose first bytes were already read (to tell an empty input from a non-empty one)."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_batches(
    stream: IO[bytes],
    fmt: TextFormat,
    compression: str | None = None,
    stats: ReadStats | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[pa.RecordBatch]:
    stats = stats if stats is not None else ReadStats()
    raw = io.BufferedReader(_CountingReader(stream, stats), buffer_size=1 << 20)
    try:
        source = pa.CompressedInputStream(raw, compression) if compression else raw
        first = source.read(1 << 16)
        if not first:
            return  # an empty object, or a compressed nothing, holds no rows: nothing to map, nothing wrong
        source = io.BufferedReader(_Prepended(first, source), buffer_size=1 << 20)
        for batch in _open(source, fmt, stats, block_size):
            stats.rows += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, UnicodeDecodeError) as exc:
        if stats.rows == 0 and (_EMPTY.search(str(exc)) or (_SHORT.search(str(exc)) and stats.bytes_read < block_size)):
            return  # a header and nothing else
        message = _first_line(exc)
        row = _ROW.search(message)
        line = int(row[1]) if row else stats.first_bad_line  # Arrow counts physical rows, header included
        raise BadInput(message, line=line, offset=stats.bytes_read) from exc


_ROW = re.compile(r"Row #(\d+)")
_EMPTY = re.compile(r"^Empty (CSV file|JSON)")
_SHORT = re.compile(r"^Could not skip initial")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _open(source, fmt: TextFormat, stats: ReadStats, block_size: int):
    if fmt.kind == "jsonl":
        return pa_json.open_json(
            source,
            read_options=pa_json.ReadOptions(use_threads=False, block_size=block_size),
            parse_options=pa_json.ParseOptions(explicit_schema=fmt.schema, unexpected_field_behavior="ignore"),
        )

    def on_invalid_row(row) -> str:
        # Return, never raise: pyarrow swallows exceptions raised in here.
        stats.bad_rows += 1
        if stats.first_bad_line is None:
            stats.first_bad_line = row.number
        if len(stats.bad_row_examples) < 3:
            stats.bad_row_examples.append(
                f"row {row.number}: expected {row.expected_columns} columns, got {row.actual_columns}"
            )
        return "error" if fmt.on_bad_row == "fail" else "skip"

    return pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(
            column_names=fmt.schema.names, skip_rows=1 if fmt.header else 0,
            use_threads=False, block_size=block_size,
        ),
        parse_options=pa_csv.ParseOptions(delimiter=fmt.delimiter, invalid_row_handler=on_invalid_row),
        convert_options=pa_csv.ConvertOptions(column_types=fmt.schema),
    )
