"""Record batches from a byte stream: CSV or JSON lines, optionally gzip- or zstd-compressed; Parquet (which
needs random access, not a stream) is read by `formats.parquet`, behind the same `batches` entry point.

Readers take any `IO[bytes]` (an S3 body, a file, a BytesIO in a test) and stream it in blocks, so memory is
bounded by the block size, never by the object's size. What cannot be parsed raises BadInput with the reason.

A row whose value does not convert to its column's type stops Arrow's typed readers, which cannot resume: the
typed read raises `ValueNotConvertible`, and the caller reads the object again with `tolerant=True`
(`formats.tolerant`), which skips and counts such rows, or under on_bad_row="fail" names the first.
"""
from __future__ import annotations

import atexit
import io
import re
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Iterator, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from ..errors import BadInput, OverBudget, ReadFailed, TallyError

MAX_BAD_ROW_EXAMPLES = 5  # per object version, in status: enough to find the pattern, bounded in the ledger
MAX_BLOCK_SIZE = 64 << 20  # the longest row Tally reads; a longer one quarantines its file
BLOCK_SIZE = 2 << 20  # Arrow reads a few blocks ahead: 8 MB blocks cost ~300 MB more RSS on a 1 GB object
_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


@dataclass(frozen=True)
class TextFormat:
    kind: Literal["csv", "jsonl"]
    schema: pa.Schema
    header: bool = False
    delimiter: str = ","
    on_bad_row: Literal["skip", "fail"] = "skip"
    # Convert only these columns (the ones the jobs use): the parser still checks every row's shape, but
    # skips building the other columns, which is most of a CSV reader's time.
    include: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ParquetLayout:
    """Parquet: the declared columns (validated against each file's own schema) and those to read."""

    schema: pa.Schema
    include: tuple[str, ...] | None = None
    kind: Literal["parquet"] = "parquet"


InputFormat = TextFormat | ParquetLayout


@dataclass
class ReadStats:
    """What a read saw; the mapper reports it in the partial's metadata and in status."""

    bytes_read: int = 0
    decompressed_bytes: int = 0  # the text parsed: bytes_read unless compressed
    rows: int = 0
    bad_rows: int = 0
    bad_row_examples: list[str] = field(default_factory=list)
    first_bad_line: int | None = None
    # What line numbers count from, when not from the object's first line: a range's mapper sees only its lines.
    origin: str | None = None

    def bad_row(self, line: int | None, example: str) -> None:
        self.bad_rows += 1
        if self.first_bad_line is None:
            self.first_bad_line = line
        if len(self.bad_row_examples) < MAX_BAD_ROW_EXAMPLES:
            self.bad_row_examples.append(self.where(example))

    def where(self, text: str) -> str:
        return f"{self.origin}, {text}" if self.origin else text


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


class _ReadsInFlight:
    """Arrow's read-ahead threads call back into our Python streams. A thread still doing so when the
    interpreter finalizes is killed inside C++ and aborts the process ("terminate called without an active
    exception"), so at exit we wait, briefly, until the last such call has returned."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self._count += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._count -= 1

    def drain(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(0.02)  # let a thread that is waiting for the GIL get in and be counted
        while self._count and time.monotonic() < deadline:
            time.sleep(0.01)


_IN_FLIGHT = _ReadsInFlight()
atexit.register(_IN_FLIGHT.drain)


class _Reads(io.RawIOBase):
    """A readable stream whose `read` hands bytes on as they come: Arrow reads whole blocks, so a buffering
    layer would only copy them (a quarter of the parse time, measured)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Counting(_Reads):
    """Counts the raw (compressed) bytes consumed, for throughput figures and error positions, and keeps what
    reading the source raised: a connection reset or a timeout says nothing about the object's bytes, and must
    not be taken for a parse error however Arrow passes it on."""

    def __init__(self, stream: IO[bytes], stats: ReadStats):
        self._stream, self._stats = stream, stats
        self.failed: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            with _IN_FLIGHT:
                data = self._stream.read(size)
        except TallyError as error:  # the version gone or replaced mid-read (ObjectMissing, CommitConflict)
            self.failed = error
            raise
        except Exception as error:
            self.failed = ReadFailed(f"reading the object failed: {type(error).__name__}: {error}")
            raise self.failed from error
        self._stats.bytes_read += len(data)
        return data


class _Inflated(_Reads):
    """Counts the text's bytes (decompressed), and stops a stream that inflates past `budget`: a decompression
    bomb, or a compressed object too large to map in one go (it is never split)."""

    def __init__(self, stream, stats: ReadStats, budget: int | None):
        self._stream, self._stats, self._budget = stream, stats, budget

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._stats.decompressed_bytes += len(data)
        if self._budget is not None and self._stats.decompressed_bytes > self._budget:
            raise OverBudget(f"{self._stats.decompressed_bytes:,} bytes of text from {self._stats.bytes_read:,} "
                             f"bytes of object, over the budget of {self._budget:,} bytes of text "
                             "(raise TALLY_MAP_MAX_DECOMPRESSED_MB to map it)", offset=self._stats.bytes_read)
        return data


class _Prepended(_Reads):
    """A stream whose first bytes were already read (to tell an empty input from a non-empty one)."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        with _IN_FLIGHT:
            if not self._head:
                return self._rest.read(size)
            if size is None or size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                return head
            head, self._head = self._head[:size], self._head[size:]
            return head


def batches(source: IO[bytes], fmt: InputFormat, key: str, stats: ReadStats | None = None,
            block_size: int = BLOCK_SIZE, tolerant: bool = False, max_decompressed: int | None = None
            ) -> Iterator[pa.RecordBatch]:
    """The one way to read an input object: by format, decompressing text by the key's extension. Parquet
    needs a seekable `source` (a file, a BytesIO, or `parquet.RangeReader` over ranged GETs); it is typed
    already, so `tolerant` only concerns text. Text that decompresses to more than `max_decompressed` bytes
    raises OverBudget."""
    stats = stats if stats is not None else ReadStats()
    if isinstance(fmt, TextFormat):
        yield from read_batches(source, fmt, compression_of(key), stats, block_size, tolerant, max_decompressed)
        return
    from .parquet import parquet_batches  # imported here: text-only mappers never load pyarrow.parquet

    for batch in parquet_batches(source, fmt.schema, fmt.include):
        stats.rows += batch.num_rows
        yield batch


def read_batches(
    stream: IO[bytes],
    fmt: TextFormat,
    compression: str | None = None,
    stats: ReadStats | None = None,
    block_size: int = BLOCK_SIZE,
    tolerant: bool = False,
    max_decompressed: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Typed batches of the text in `stream`. A value that does not convert raises ValueNotConvertible;
    read the stream again with `tolerant=True` to skip (or, under "fail", report) the rows that hold one."""
    stats = stats if stats is not None else ReadStats()
    counted = _Counting(stream, stats)
    try:
        source = _Inflated(pa.CompressedInputStream(counted, compression) if compression else counted, stats,
                           max_decompressed)
        first = source.read(1 << 16)
        if not first:
            return  # an empty object, or a compressed nothing, holds no rows: nothing to map, nothing wrong
        source = _Prepended(first, source)
        if tolerant:
            from .tolerant import tolerant_batches  # imported here: the typed path never needs it

            for batch in tolerant_batches(source, fmt, stats, block_size):
                stats.rows += batch.num_rows
                yield batch
            return
        reader = _open(source, fmt, stats, block_size)
        try:
            for batch in reader:
                stats.rows += batch.num_rows
                yield batch
        finally:
            # Release Arrow's reader (and its read-ahead thread, which calls back into Python) now, not
            # whenever the garbage collector gets to it: at interpreter exit that aborts the process.
            reader.close()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, UnicodeDecodeError) as exc:
        if counted.failed is not None:
            raise counted.failed from exc
        if stats.rows == 0 and (_EMPTY.search(str(exc)) or (_SHORT.search(str(exc)) and stats.bytes_read < block_size)):
            return  # a header and nothing else
        message = _first_line(exc)
        row = _ROW.search(message)
        line = int(row[1]) if row else stats.first_bad_line  # Arrow counts physical rows, header included
        if _STRADDLING.search(message):
            raise RowTooLong(f"a row is longer than the {block_size:,}-byte read block",
                             offset=stats.bytes_read) from exc
        if not tolerant and _converts_values(fmt, exc):
            raise ValueNotConvertible(message, line=line, offset=stats.bytes_read) from exc
        raise BadInput(stats.where(message), line=line, offset=stats.bytes_read) from exc


_ROW = re.compile(r"Row #(\d+)")
_EMPTY = re.compile(r"^Empty (CSV file|JSON)")
_SHORT = re.compile(r"^Could not skip initial")
_STRADDLING = re.compile(r"straddl")
_CSV_VALUE = re.compile(r"^In CSV column #")


def _converts_values(fmt: TextFormat, exc: BaseException) -> bool:
    """Whether the typed reader failed on a row's values, which the tolerant reading can skip. Decompression
    errors are OSErrors; a CSV row of the wrong length is skipped by the typed reader itself (or, under
    "fail", fails the object right away); a JSON line that is not JSON fails Arrow's reader like a value of
    the wrong type, and is skipped like one."""
    if not isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError)):
        return False
    return fmt.kind == "jsonl" or bool(_CSV_VALUE.match(str(exc)))


class RowTooLong(BadInput):
    """A row does not fit in one read block; reading again with bigger blocks can map it."""


class ValueNotConvertible(BadInput):
    """A value does not convert to its column's type, and Arrow's typed reader cannot go past it: reading
    again with `tolerant=True` can (and must start over: the rows before it were handed out already)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _open(source, fmt: TextFormat, stats: ReadStats, block_size: int):
    if fmt.kind == "jsonl":
        schema = fmt.schema if fmt.include is None else pa.schema([fmt.schema.field(n) for n in fmt.include])
        return pa_json.open_json(
            source,
            read_options=pa_json.ReadOptions(use_threads=False, block_size=block_size),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )

    def on_invalid_row(row) -> str:
        # Return, never raise: pyarrow swallows exceptions raised in here. Arrow numbers rows, not lines (an
        # empty line is no row): the tolerant reading, which knows lines, says "line".
        stats.bad_row(row.number, f"row {row.number}: expected {row.expected_columns} columns, "
                                  f"got {row.actual_columns}")
        return "error" if fmt.on_bad_row == "fail" else "skip"

    return pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(
            column_names=fmt.schema.names, skip_rows=1 if fmt.header else 0,
            use_threads=False, block_size=block_size,
        ),
        parse_options=pa_csv.ParseOptions(delimiter=fmt.delimiter, invalid_row_handler=on_invalid_row),
        convert_options=pa_csv.ConvertOptions(column_types=fmt.schema, include_columns=fmt.include),
    )
