"""Byte ranges of a text object, for mapping one large object in parallel pieces.

Hadoop's text-split rule makes the pieces exact: a range [start, end) owns every line that *starts* inside it.
The line that straddles `end` is read to its end by the range it starts in; the one that straddles `start` is
left to the range before. Every line is then read by exactly one range, whatever the ranges' sizes, so the
pieces' partials merge into exactly the whole object's partial.
"""
from __future__ import annotations

import io
from typing import IO

CHUNK = 1 << 16


def split_ranges(size: int, range_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `range_bytes` covering an object of `size` bytes."""
    if range_bytes < 1:
        raise ValueError("range_bytes must be positive")
    return [(start, min(start + range_bytes, size)) for start in range(0, size, range_bytes)] or [(0, 0)]


def read_from(start: int) -> int:
    """Where the bytes of range [start, ...) must be read from: one byte early, because the byte before
    `start` says whether a line starts exactly at `start`."""
    return max(start - 1, 0)


class LineRange(io.RawIOBase):
    """The lines range [start, end) owns, read from `raw`, a stream positioned at `read_from(start)` (a ranged
    GET to the object's end: reading stops one line past `end`, so little more than the range is fetched)."""

    def __init__(self, raw: IO[bytes], start: int, end: int, chunk: int = CHUNK):
        self.raw, self.end, self.chunk = raw, end, chunk
        self.position = read_from(start)  # absolute offset of the next byte `raw` gives
        self.skipping = start > 0         # still inside the line the range before owns
        self.pending, self.done = b"", start >= end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending and not self.done:
            self._fill()
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count

    def _fill(self) -> None:
        data = self.raw.read(self.chunk)
        if not data:
            self.done = True
            return
        begin, self.position = self.position, self.position + len(data)
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data, begin, self.skipping = data[newline + 1:], begin + newline + 1, False
            if begin >= self.end:  # the first line that starts in the range starts after it: none does
                self.done = True
                return
        # The first newline at or after end - 1 ends the last line that starts before `end`.
        newline = data.find(b"\n", max(0, self.end - 1 - begin))
        if newline >= 0:
            data, self.done = data[: newline + 1], True
        self.pending += data
