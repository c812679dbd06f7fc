"""The prefetching reader: several ranged reads in flight, bytes handed out exactly once and in order."""
from __future__ import annotations

import io
import threading

import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.errors import CommitConflict
from chalicelib.formats.prefetch import PrefetchingReader


class RangedObject:
    """An object's bytes behind `fetch(start, end)`, recording the ranges asked for."""

    def __init__(self, data: bytes):
        self.data, self.asked, self._lock = data, [], threading.Lock()

    def fetch(self, start: int, end: int) -> bytes:
        with self._lock:
            self.asked.append((start, end))
        return self.data[start:end]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=5000), chunk=st.integers(1, 700), ahead=st.integers(1, 5),
       reads=st.lists(st.integers(1, 900), min_size=1, max_size=8), bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
       use_first=st.booleans())
def test_reads_the_range_exactly_once_and_in_order(data, chunk, ahead, reads, bounds, use_first):
    start, end = sorted(int(b * len(data)) for b in bounds)
    obj = RangedObject(data)
    first = io.BytesIO(data[start:]) if use_first else None
    reader = PrefetchingReader(obj.fetch, start, end, first=first, chunk=chunk, ahead=ahead)
    out, i = bytearray(), 0
    while True:
        piece = reader.read(reads[i % len(reads)])
        i += 1
        if not piece:
            break
        out += piece
    reader.close()
    assert bytes(out) == data[start:end]
    covered = sorted(obj.asked)
    # The ranges asked for tile [start, end) (after the first chunk when it came from the open stream) once.
    position = min(end, start + chunk) if use_first else start
    for range_start, range_end in covered:
        assert range_start == position and 0 < range_end - range_start <= chunk
        position = range_end
    assert position == end
    assert reader.bytes_fetched == end - start


def test_keeps_no_more_than_ahead_reads_in_flight():
    obj = RangedObject(bytes(range(256)) * 100)
    reader = PrefetchingReader(obj.fetch, 0, len(obj.data), chunk=100, ahead=3)
    reader.read(1)
    # One chunk is being read from, three more are requested: memory stays ahead * chunk.
    assert len(obj.asked) <= 4
    reader.close()


def test_a_failed_read_surfaces_in_the_reader():
    def fetch(start: int, end: int) -> bytes:
        if start >= 200:
            raise CommitConflict("the object was overwritten")
        return b"x" * (end - start)

    reader = PrefetchingReader(fetch, 0, 1000, chunk=100, ahead=2)
    assert reader.read(200) == b"x" * 100
    with pytest.raises(CommitConflict):
        while reader.read(100):
            pass
    reader.close()


def test_a_buffered_text_parser_reads_through_it():
    lines = b"".join(f"{i},{i * 2}\n".encode() for i in range(5000))
    obj = RangedObject(lines)
    with io.BufferedReader(PrefetchingReader(obj.fetch, 0, len(lines), chunk=1000, ahead=4)) as stream:
        assert stream.read().count(b"\n") == 5000
