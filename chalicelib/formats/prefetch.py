"""A text object as one sequential stream, read from S3 by several ranged GETs in flight at once.

One GET stream gives a Lambda roughly 50-90 MB/s, well below what the map kernel parses on one core, so a
mapper reading a single stream waits on the network and is billed for it. `PrefetchingReader` keeps `ahead`
ranged reads of `chunk` bytes in flight on a few threads and hands their bytes out in order: the parser sees a
plain stream, and memory is bounded by `ahead * chunk`, never by the object's size.
"""
from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Callable

Fetch = Callable[[int, int], bytes]  # (start, end exclusive) -> those bytes of one pinned object version

CHUNK_BYTES = 8 << 20
AHEAD = 4


class PrefetchingReader(io.RawIOBase):
    """Bytes [start, end) of an object, in order. `first`, if given, is an already open stream positioned at
    `start` (the mapper's first GET): its first chunk is read from it while the next chunks are fetched, and it
    is closed with the reader."""

    def __init__(self, fetch: Fetch, start: int, end: int, first: IO[bytes] | None = None,
                 chunk: int = CHUNK_BYTES, ahead: int = AHEAD):
        if chunk <= 0 or ahead <= 0:
            raise ValueError("chunk and ahead must be positive")
        self._fetch, self._end, self._chunk = fetch, end, chunk
        self._pool = ThreadPoolExecutor(ahead, thread_name_prefix="tally-prefetch")
        self._next_start = start  # where the next chunk to request begins
        self._pending: deque[Future] = deque()
        self._first = first
        self._current, self._offset = memoryview(b""), 0
        self.requests = 0
        self.bytes_fetched = 0
        if first is not None and start < end:
            stop = min(end, start + chunk)
            self._pending.append(self._pool.submit(_read_exactly, first, stop - start))
            self._next_start = stop
        for _ in range(ahead):
            self._request_next()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (the rest of the current chunk at most), copied once."""
        if not self._advance():
            return b""
        stop = len(self._current) if size is None or size < 0 else min(len(self._current), self._offset + size)
        data = self._current[self._offset:stop].tobytes()
        self._offset = stop
        return data

    def readinto(self, buffer) -> int:
        if not self._advance():
            return 0
        count = min(len(buffer), len(self._current) - self._offset)
        buffer[:count] = self._current[self._offset:self._offset + count]
        self._offset += count
        return count

    def _advance(self) -> bool:
        """Make the current chunk one with bytes left; False at the end."""
        while self._offset >= len(self._current):
            if not self._pending:
                return False
            data = self._pending.popleft().result()  # a failed fetch raises here, in the reader's thread
            self._request_next()
            self.bytes_fetched += len(data)
            self._current, self._offset = memoryview(data), 0
        return True

    def close(self) -> None:
        if not self.closed:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pending.clear()
            if self._first is not None:
                self._first.close()
        super().close()

    def _request_next(self) -> None:
        if self._next_start >= self._end:
            return
        stop = min(self._end, self._next_start + self._chunk)
        self._pending.append(self._pool.submit(self._fetch, self._next_start, stop))
        self.requests += 1
        self._next_start = stop


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    parts, left = [], count
    while left:
        data = stream.read(left)
        if not data:
            raise EOFError(f"the object ended {left} bytes early")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)
