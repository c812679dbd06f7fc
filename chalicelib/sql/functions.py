"""Scalar functions of the SQL dialect whose DuckDB semantics take more than one Arrow call: substring's
positions, LIKE patterns, date parts, date_trunc and time_bucket. Parameters that Arrow takes as options
(positions, patterns, units, widths) are literals, checked by the compiler."""
from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobDefinitionError
from ..expressions import Value
from .types import type_of


def substring(text: Value, start: int, length: int | None) -> Value:
    """SUBSTRING(text, start[, length]), 1-based; a start of 0 or below counts positions before the first
    character, a negative one from the end, as DuckDB does."""
    if length is not None and length < 0:
        raise JobDefinitionError("substring's length is a literal integer of at least 0")
    if start > 0:
        begin, end = start - 1, None if length is None else start - 1 + length
    elif start == 0:
        begin, end = 0, None if length is None else max(length - 1, 0)
    else:
        begin, end = start, None if length is None or start + length >= 0 else start + length
    return pc.utf8_slice_codeunits(text, begin, end)


def like_pattern(pattern: str, escape: str | None) -> str:
    """A LIKE pattern as an anchored RE2 expression: % any text, _ one character, `escape` (if any) makes the
    next character literal. Without ESCAPE a backslash is an ordinary character, as in DuckDB."""
    if escape is not None and len(escape) != 1:
        raise JobDefinitionError("LIKE's ESCAPE is a single character")
    parts, characters = [], iter(pattern)
    for character in characters:
        if character == escape:
            following = next(characters, None)
            if following is None:
                raise JobDefinitionError("a LIKE pattern may not end with its escape character")
            parts.append(re.escape(following))
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    return "(?s)^" + "".join(parts) + "$"


# extract(part FROM x), date_part('part', x) and the functions of the same names: DuckDB's numbering.
_PARTS = {
    "year": pc.year, "quarter": pc.quarter, "month": pc.month, "day": pc.day, "dayofmonth": pc.day,
    "hour": pc.hour, "minute": pc.minute, "second": pc.second,
    "dow": lambda v: pc.day_of_week(v, count_from_zero=True, week_start=7),  # Sunday 0
    "dayofweek": lambda v: pc.day_of_week(v, count_from_zero=True, week_start=7),
    "isodow": lambda v: pc.day_of_week(v, count_from_zero=False, week_start=1),  # Monday 1
    "doy": pc.day_of_year, "dayofyear": pc.day_of_year, "week": pc.iso_week, "weekofyear": pc.iso_week,
    "isoyear": pc.iso_year,
}
_TIME_PARTS = {"hour", "minute", "second"}
PARTS = sorted(_PARTS)


def date_part(part: str, value: Value) -> Value:
    part = part.lower()
    if part not in _PARTS:
        raise JobDefinitionError(f"unknown date part {part!r} (parts: {', '.join(PARTS)})")
    if part in _TIME_PARTS and pa.types.is_date(type_of(value)):
        value = pc.cast(value, pa.timestamp("us"))  # a date's time of day is midnight
    return pc.cast(_PARTS[part](value), pa.int64())


_TRUNC_UNITS = {"year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond",
                "microsecond"}
_UNIT_ALIASES = {"years": "year", "quarters": "quarter", "months": "month", "weeks": "week", "days": "day",
                 "d": "day", "hours": "hour", "h": "hour", "minutes": "minute", "min": "minute",
                 "seconds": "second", "s": "second", "milliseconds": "millisecond", "ms": "millisecond",
                 "microseconds": "microsecond", "us": "microsecond", "y": "year", "mon": "month"}


def unit_name(text: str) -> str:
    unit = text.lower()
    return _UNIT_ALIASES.get(unit, unit)


def date_trunc(unit: str, value: Value) -> Value:
    """date_trunc(unit, x): a TIMESTAMP, for dates too (as DuckDB answers); weeks start on Monday."""
    unit = unit_name(unit)
    if unit not in _TRUNC_UNITS:
        raise JobDefinitionError(f"date_trunc: unknown unit {unit!r} (units: {', '.join(sorted(_TRUNC_UNITS))})")
    kind = type_of(value)
    if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
        raise JobDefinitionError(f"date_trunc needs a date or timestamp, not {kind}")
    return pc.floor_temporal(pc.cast(value, pa.timestamp("us")), unit=unit)


# DuckDB's default origins: Monday 2000-01-03 for widths in days and smaller, 2000-01-01 for months and years.
_ORIGIN = dt.datetime(2000, 1, 3)
_MONTH_ORIGIN = 2000 * 12
_MICROS = {"microsecond": 1, "millisecond": 1000, "second": 1_000_000, "minute": 60_000_000,
           "hour": 3_600_000_000, "day": 86_400_000_000, "week": 7 * 86_400_000_000}
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def interval_width(count: int, unit: str) -> tuple[int, int]:
    """(months, microseconds) of INTERVAL 'count unit'."""
    unit = unit_name(unit)
    if count < 1 or (unit not in _MICROS and unit not in _MONTHS):
        raise JobDefinitionError(f"time_bucket's width is a positive number of one unit "
                                 f"({', '.join([*_MICROS, *_MONTHS])}), not {count} {unit}")
    return (count * _MONTHS[unit], 0) if unit in _MONTHS else (0, count * _MICROS[unit])


def time_bucket(months: int, micros: int, value: Value, origin: dt.datetime | None) -> Value:
    """time_bucket(INTERVAL, x[, origin]): the start of x's bucket of the width, buckets aligned on DuckDB's
    origin (or the given one); a DATE for a date, a TIMESTAMP for a timestamp."""
    kind = type_of(value)
    if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
        raise JobDefinitionError(f"time_bucket needs a date or timestamp, not {kind}")
    stamps = pc.cast(value, pa.timestamp("us"))
    if months:
        if origin is not None:
            raise JobDefinitionError("time_bucket takes an origin for widths of days or less only")
        index = pc.subtract(pc.add(pc.multiply(pc.year(stamps), 12), pc.subtract(pc.month(stamps), 1)),
                            _MONTH_ORIGIN)
        start = pc.add(_floor_multiple(index, months), _MONTH_ORIGIN)
        years, month = pc.divide(start, 12), pc.add(_remainder(start, 12), 1)
        text = pc.binary_join_element_wise(pc.cast(years, pa.string()),
                                           pc.utf8_lpad(pc.cast(month, pa.string()), width=2, padding="0"),
                                           "01", "-")
        bucket = pc.cast(pc.cast(text, pa.date32()), pa.timestamp("us"))
    else:
        base = pa.scalar(origin or _ORIGIN, pa.timestamp("us")).cast(pa.int64()).as_py()
        ticks = pc.subtract(pc.cast(stamps, pa.int64()), base)
        bucket = pc.cast(pc.add(_floor_multiple(ticks, micros), base), pa.timestamp("us"))
    return pc.cast(pc.floor_temporal(bucket, unit="day"), kind) if pa.types.is_date(kind) else bucket


def _floor_multiple(values: Value, width: int) -> Value:
    """The largest multiple of `width` at or below each value (Arrow's integer division truncates)."""
    quotient = pc.divide(values, width)
    below = pc.cast(pc.greater(pc.multiply(quotient, width), values), pa.int64())
    return pc.multiply(pc.subtract(quotient, below), width)


def _remainder(values: Value, width: int) -> Value:
    return pc.subtract(values, pc.multiply(pc.divide(values, width), width))
