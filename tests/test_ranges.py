"""Byte ranges of a text object: given any text and any range size, the ranges' lines are the object's lines,
each exactly once, and each range reads little more than its own bytes."""
from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.formats.ranges import LineRange, read_from, split_ranges

LINES = st.lists(st.text(alphabet="ab,\u00e9", max_size=30).map(str.encode), max_size=40)


def read_range(data: bytes, start: int, end: int, chunk: int) -> tuple[bytes, int]:
    raw = io.BytesIO(data[read_from(start):])
    body = LineRange(raw, start, end, chunk).read()
    return body, read_from(start) + raw.tell()


@given(LINES, st.booleans(), st.integers(1, 64), st.integers(1, 16))
def test_the_ranges_read_every_line_exactly_once(lines, trailing_newline, range_bytes, chunk):
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")

    pieces = [read_range(data, start, end, chunk)[0] for start, end in split_ranges(len(data), range_bytes)]

    assert b"".join(pieces) == data
    owning = [piece for piece in pieces if piece]
    assert all(piece.endswith(b"\n") for piece in owning[:-1])  # whole lines: only the object's end may cut one


@given(LINES, st.integers(1, 64))
def test_a_range_reads_at_most_one_line_and_one_chunk_past_its_end(lines, range_bytes):
    data = b"\n".join(lines) + b"\n"
    longest = max(map(len, lines), default=0) + 1
    for start, end in split_ranges(len(data), range_bytes):
        _, stopped_at = read_range(data, start, end, chunk=8)
        assert stopped_at <= end + longest + 8


def test_a_range_inside_one_long_line_owns_nothing():
    data = b"x" * 100 + b"\nlast\n"
    assert read_range(data, 10, 20, 4)[0] == b""
    assert read_range(data, 0, 10, 4)[0] == b"x" * 100 + b"\n"
    assert read_range(data, 90, 106, 4)[0] == b"last\n"


def test_split_ranges_cover_the_object():
    assert split_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert split_ranges(0, 4) == [(0, 0)]
