"""Reading a text object past the rows whose values do not convert to their columns' types.

Arrow's typed readers stop at the first such value and cannot go on, so `read_batches` reads typed (the fast
path, which the benchmarks measure), raises `ValueNotConvertible` at such a value, and the caller reads the
object again from its start in this mode. Here the text is cut into blocks of whole lines, so the line a row
starts on is known exactly; each block is parsed with the typed options first (a block without a bad value
costs what the fast path costs) and only a block that fails is taken apart:

- CSV: the block is parsed again with the used columns as bytes, and each column converted the way Arrow's
  CSV converter converts it (null values, blanks around numbers, a decimal's precision counted on the literal;
  tests/test_formats.py compares the two value for value). Where a column does not convert, bisection finds
  the values that don't: a cast of a slice costs microseconds, so a bad value costs about 2*log2(rows) casts,
  and a column of nothing but bad values about two casts a row.
- JSON lines: Arrow's JSON reader has no text mode to fall back on, so the block's lines are bisected with the
  reader itself (its exact rules): a bad line costs about 2*log2(lines) parses of ever smaller slices.

Lines are numbered from 1, the header included, as an editor numbers them: a line ends at "\\n", "\\r\\n" or,
in CSV, a lone "\\r" (Arrow's row ends). A CSV row is a line, empty lines are not rows; where that does not
hold (a quoted value spanning lines), a block's bad rows are reported by the block's span of lines.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from ..errors import BadInput
from . import ReadStats, RowTooLong, TextFormat, csv_values

_SHOWN = 40  # characters of a bad value quoted in a report
# Rows taken apart one by one cost up to ~100 us each (a JSON line of the wrong type: a parse of its own), so an
# object of mostly bad rows, a wrong format rather than a few bad rows (declared types, delimiter, a binary
# file), would run a Lambda out of time. Once this many are bad and they outnumber the good, it is quarantined.
MOSTLY_BAD = 10_000


def tolerant_batches(source, fmt: TextFormat, stats: ReadStats, block_size: int) -> Iterator[pa.RecordBatch]:
    names = list(fmt.include) if fmt.include is not None else fmt.schema.names
    schema = pa.schema([fmt.schema.field(name) for name in names])
    read_block = _csv_block if fmt.kind == "csv" else _json_block
    for data, first_line in _line_blocks(source, block_size, fmt.kind == "csv", fmt.header):
        table = read_block(data, first_line, fmt, schema, _Bad(fmt, stats))
        yield from table.to_batches()
        if stats.bad_rows >= MOSTLY_BAD and stats.bad_rows > stats.rows:
            raise BadInput(stats.where(f"most rows are bad ({stats.bad_rows:,} of the first "
                                       f"{stats.bad_rows + stats.rows:,}): ") + "; ".join(stats.bad_row_examples),
                           line=stats.first_bad_line, offset=stats.bytes_read)


def _line_blocks(source, block_size: int, lone_cr: bool, header: bool) -> Iterator[tuple[memoryview, int]]:
    """The text in blocks of whole lines of about `block_size` bytes, each with the number of its first line."""
    carry, line = b"", 1
    while True:
        fresh = _read(source, block_size)
        data, at_end = carry + fresh, len(fresh) < block_size
        if not data:
            return
        end = len(data) if at_end else _after_last_line_end(data, lone_cr)
        if end == 0:
            raise RowTooLong(f"a row is longer than the {block_size:,}-byte read block")
        start = 0
        if header:
            start, line, header = min(_first_line_end(data, lone_cr), end), 2, False
        if end > start:
            yield memoryview(data)[start:end], line
        line += _line_count(data, start, end, lone_cr)
        if at_end:
            return
        carry = data[end:]


def _read(source, size: int) -> bytes:
    parts, wanted = [], size
    while wanted > 0:
        data = source.read(wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
    return b"".join(parts)


def _after_last_line_end(data: bytes, lone_cr: bool) -> int:
    end = data.rfind(b"\n") + 1
    if not end and lone_cr:
        end = data.rfind(b"\r", 0, len(data) - 1) + 1  # a last "\r" may be the first half of "\r\n"
    return end


def _first_line_end(data: bytes, lone_cr: bool) -> int:
    """Where the second line starts (the end of `data` if there is none)."""
    ends = [i + 1 for i in (data.find(b"\n"), data.find(b"\r") if lone_cr else -1) if i >= 0]
    end = min(ends, default=len(data))
    return end + 1 if data[end - 1:end + 1] == b"\r\n" else end


def _line_count(data: bytes, start: int, end: int, lone_cr: bool) -> int:
    count = int(np.count_nonzero(np.frombuffer(data, np.uint8, end - start, start) == 10))  # 5x bytes.count
    if lone_cr and data.find(b"\r", start, end) >= 0:
        count += data.count(b"\r", start, end) - data.count(b"\r\n", start, end)
    return count


class _Bad:
    """The bad rows of one block: collected, then reported in line order (or, under "fail", the first raised)."""

    def __init__(self, fmt: TextFormat, stats: ReadStats):
        self.fail, self.stats = fmt.on_bad_row == "fail", stats
        self.rows: list[tuple[int, str, int | None]] = []  # (sort key, example, line)

    def add(self, order: int, line: int | None, lines: str, reason: str) -> None:
        self.rows.append((order, f"{lines}: {reason}", line))

    def report(self) -> None:
        for _, example, line in sorted(self.rows, key=lambda row: row[0]):
            if self.fail:  # the offset, as the typed reader's: how far the read had come
                raise BadInput(self.stats.where(example), line=line, offset=self.stats.bytes_read)
            self.stats.bad_row(line, example)


# --- CSV -----------------------------------------------------------------------------------------------------


def _csv_block(data: memoryview, first_line: int, fmt: TextFormat, schema: pa.Schema, bad: _Bad) -> pa.Table:
    shapes: list[tuple[int, str]] = []

    def on_invalid_row(row) -> str:
        # Always skipped here: under "fail" the first bad row of the block, of any kind, is the one reported.
        shapes.append((row.number, f"expected {row.expected_columns} columns, got {row.actual_columns}"))
        return "skip"

    try:
        table, unconvertible = _read_csv(data, fmt, schema, on_invalid_row), {}
    except pa.ArrowInvalid as exc:
        if not str(exc).startswith("In CSV column #"):
            raise
        shapes.clear()
        raw = _read_csv(data, fmt, pa.schema([(name, pa.binary()) for name in schema.names]), on_invalid_row)
        table, unconvertible = _converted(raw, schema)
    if shapes or unconvertible:
        rows = table.num_rows + len(unconvertible) + len(shapes)
        # The rows Arrow numbered and kept, in order: the converted table's row i is the i-th of them.
        kept = np.setdiff1d(np.arange(1, rows + 1), [number for number, _ in shapes if number is not None])
        where = _row_lines(data, first_line, rows)
        for number, reason in shapes:
            bad.add(number or 0, *where(number), reason)
        for index, reason in unconvertible.items():
            bad.add(int(kept[index]), *where(int(kept[index])), reason)
        bad.report()
    return table


def _read_csv(data: memoryview, fmt: TextFormat, types: pa.Schema, on_invalid_row) -> pa.Table:
    return pa_csv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pa_csv.ReadOptions(column_names=fmt.schema.names, use_threads=False,
                                        block_size=max(len(data), 1)),
        parse_options=pa_csv.ParseOptions(delimiter=fmt.delimiter, invalid_row_handler=on_invalid_row),
        convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=types.names),
    )


def _row_lines(data: memoryview, first_line: int, rows: int) -> Callable[[int | None], tuple[int | None, str]]:
    """Arrow's row number (1-based within the block) -> (its line, how to say where it is). A row is a line
    that is not empty, unless a quoted value spans lines: then the block's span of lines is all we know."""
    text = np.frombuffer(data, np.uint8)
    lf, cr = text == 10, text == 13
    lone_cr = cr.copy()
    lone_cr[:-1] &= ~lf[1:]
    ends = np.flatnonzero(lf | lone_cr)  # each terminated line's last byte
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(ends.dtype)
    crlf = lf[ends] & (ends > starts) & cr[ends - 1]
    lines = np.flatnonzero(ends - starts - crlf > 0)  # 0-based, in the block
    unterminated = len(data) > (ends[-1] + 1 if len(ends) else 0)
    if unterminated:
        lines = np.append(lines, len(ends))
    span = f"a row of lines {first_line}-{first_line + len(ends) + unterminated - 1}"

    def where(number: int | None) -> tuple[int | None, str]:
        if number is None or len(lines) != rows:
            return None, span
        line = first_line + int(lines[number - 1])
        return line, f"line {line}"

    return where


def _converted(raw: pa.Table, schema: pa.Schema) -> tuple[pa.Table, dict[int, str]]:
    """The columns converted as the CSV reader converts them, without the rows where one does not convert;
    and, by row, why the first column that does not convert does not."""
    columns, unconvertible = [], {}
    for field, values in zip(schema, raw.columns):
        values = values.combine_chunks()
        column, bad = csv_values.converted(values, field.type)
        columns.append(column)
        for index in bad:
            unconvertible.setdefault(index, f"{field.name}: cannot convert {_shown(values[index].as_py())} to "
                                            f"{field.type}")
    table = pa.Table.from_arrays(columns, schema=schema)
    if unconvertible:
        keep = np.ones(table.num_rows, bool)
        keep[list(unconvertible)] = False
        table = table.filter(pa.array(keep))
    return table, dict(sorted(unconvertible.items()))


def _shown(value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return repr(value[:_SHOWN])  # b'...': not text
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


# --- JSON lines ----------------------------------------------------------------------------------------------


def _json_block(data: memoryview, first_line: int, fmt: TextFormat, schema: pa.Schema, bad: _Bad) -> pa.Table:
    """The block's rows, taking apart the slices of lines Arrow's reader fails on. A parse error names the row
    it stopped at: that line alone is tried first (a line is a row, unless blank or holding two objects, so
    the guess is checked), and only failing that is the slice halved."""
    text = np.frombuffer(data, np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(text == 10) + 1])
    if bounds[-1] != len(data):
        bounds = np.append(bounds, len(data))
    buffer, tables = pa.py_buffer(data), []

    def parse(first: int, end: int) -> pa.Table:  # lines [first, end) of the block
        start = int(bounds[first])
        return _read_json(buffer.slice(start, int(bounds[end]) - start), schema)

    pending = [(0, len(bounds) - 1)]  # slices of lines still to read, the next one last
    while pending:
        first, end = pending.pop()
        if first == end:
            continue
        try:
            tables.append(parse(first, end))
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            error = exc
        if end - first == 1:
            bad.add(first, first_line + first, f"line {first_line + first}", _json_reason(error))
            continue
        row = _JSON_ROW.search(str(error))
        guess = first + int(row[1]) if row else end
        if guess == first and bytes(data[bounds[first]:bounds[first + 1]]).strip():
            # Row 0 failed and it is on this line (a value does not span lines): no need to try it alone.
            bad.add(first, first_line + first, f"line {first_line + first}", _json_reason(error))
            pending.append((first + 1, end))
            continue
        if guess < end:
            try:
                parse(guess, guess + 1)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                bad.add(guess, first_line + guess, f"line {first_line + guess}", _json_reason(exc))
                pending += [(guess + 1, end), (first, guess)]
                continue
        middle = (first + end) // 2
        pending += [(middle, end), (first, middle)]
    bad.report()
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_json(data: pa.Buffer, schema: pa.Schema) -> pa.Table:
    return pa_json.read_json(
        pa.BufferReader(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(data.size, 1)),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )


_JSON_ROW = re.compile(r" in row (\d+)$")


def _json_reason(exc: BaseException) -> str:
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _JSON_ROW.sub("", message)[:300]
