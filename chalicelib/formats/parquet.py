"""Record batches from Parquet, one row group at a time, reading only the columns a job uses.

Parquet is read from the end (the footer says where every column chunk is), so it needs random access, not a
stream. `RangeReader` gives pyarrow a seekable file over any `fetch(start, end) -> bytes` — in the mapper,
ranged GETs of one object version — so a Lambda reads the footer and then just the projected columns' chunks,
never the whole object and never a local copy of it. Memory is bounded by one row group's projected columns.
"""
from __future__ import annotations

import io
from typing import IO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import BadInput

Fetch = Callable[[int, int], bytes]
# Reads shorter than this are rounded up to it: the footer comes in a few small reads, and
# each ranged GET costs a request. Column chunks are read as asked (they are the bytes we came for).
MIN_FETCH = 64 << 10


class RangeReader(io.RawIOBase):
    """A read-only, seekable file whose bytes come from `fetch(start, end)` (end exclusive)."""

    def __init__(self, fetch: Fetch, size: int, min_fetch: int = MIN_FETCH):
        self._fetch, self._size, self._min_fetch = fetch, size, min_fetch
        self._position = 0
        self._buffer, self._buffer_start = b"", 0
        self.requests = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        start = self._position - self._buffer_start
        if not (0 <= start and start + wanted <= len(self._buffer)):
            end = min(self._size, self._position + max(wanted, self._min_fetch))
            self._buffer, self._buffer_start = self._fetch(self._position, end), self._position
            self.requests += 1
            self.bytes_fetched += len(self._buffer)
            start = 0
        view = memoryview(self._buffer)[start:start + wanted]
        buffer[: len(view)] = view
        self._position += len(view)
        return len(view)


def parquet_batches(source: IO[bytes], schema: pa.Schema, columns: tuple[str, ...] | None = None,
                    batch_size: int = 64 * 1024) -> Iterator[pa.RecordBatch]:
    """Batches of `columns` (all of `schema` if None), cast to the job's declared types. A file without a
    declared column, or with one that does not cast, is bad input: the job's expressions were checked against
    the declared schema, not against this file."""
    wanted = schema if columns is None else pa.schema([schema.field(name) for name in columns])
    try:
        file = pq.ParquetFile(source, pre_buffer=False)
        present = set(file.schema_arrow.names)
        missing = [name for name in wanted.names if name not in present]
        if missing:
            raise BadInput(f"Parquet file has no column(s) {missing} (it has {sorted(present)})")
        for batch in file.iter_batches(batch_size=batch_size, columns=wanted.names, use_threads=False):
            yield _conform(batch, wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        raise BadInput(f"unreadable Parquet: {str(exc).strip().splitlines()[0][:300]}") from exc


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise BadInput(f"column {field.name!r} is {column.type}, which does not convert to "
                               f"{field.type}: {exc}") from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
