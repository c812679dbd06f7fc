"""Handlers of SQL's scalar functions: text (substring, lower, upper, length, concat, trim, replace,
starts_with, ends_with, contains, regexp_matches), numbers (abs, round, floor, ceil) and time (extract,
date_part, year() and the other parts, date_trunc, time_bucket)."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..expressions import Evaluator
from . import functions
from .operators import as_text
from .registry import handles

SCALAR_FUNCTIONS = ["abs", "ceil", "coalesce", "concat", "contains", "date_part", "date_trunc", "ends_with",
                    "extract", "floor", "ifnull", "length", "lower", "nullif", "regexp_matches", "replace",
                    "round", "starts_with", "substr", "substring", "time_bucket", "trim", "ltrim", "rtrim",
                    "upper", *functions.PARTS]


def _unary(function):
    def handler(c, node: exp.Func) -> Evaluator:
        operand = c.compile(node.this)
        return lambda batch: function(operand(batch))
    return handler


handles(exp.Lower)(_unary(pc.utf8_lower))
handles(exp.Upper)(_unary(pc.utf8_upper))
handles(exp.Length)(_unary(lambda text: pc.cast(pc.utf8_length(text), pa.int64())))
handles(exp.Abs)(_unary(pc.abs_checked))
handles(exp.Floor)(_unary(pc.floor))
handles(exp.Ceil)(_unary(pc.ceil))


@handles(exp.Substring)
def _substring(c, node: exp.Substring) -> Evaluator:
    text = c.compile(node.this)
    start = c.literal(node.args["start"], "substring's start") if node.args.get("start") else 1
    length = c.literal(node.args["length"], "substring's length") if node.args.get("length") else None
    if not isinstance(start, int) or (length is not None and not isinstance(length, int)):
        raise c.source.error("substring's start and length are literal integers", node)
    return lambda batch: functions.substring(text(batch), start, length)


@handles(exp.Concat)
def _concat(c, node: exp.Concat) -> Evaluator:
    """concat(a, b, ...): NULLs count as empty text, as in DuckDB."""
    parts = [c.compile(part) for part in node.expressions]
    return lambda batch: pc.binary_join_element_wise(*(as_text(part(batch)) for part in parts), "",
                                                     null_handling="replace", null_replacement="")


_TRIMS = {None: pc.utf8_trim, "BOTH": pc.utf8_trim, "LEADING": pc.utf8_ltrim, "TRAILING": pc.utf8_rtrim}


@handles(exp.Trim)
def _trim(c, node: exp.Trim) -> Evaluator:
    text = c.compile(node.this)
    characters = c.literal(node.expression, "trim's characters") if node.expression else " "
    function = _TRIMS[node.args.get("position")]
    return lambda batch: function(text(batch), characters=characters)


@handles(exp.Replace)
def _replace(c, node: exp.Replace) -> Evaluator:
    text = c.compile(node.this)
    old = c.literal(node.expression, "replace's pattern")
    new = c.literal(node.args["replacement"], "replace's replacement") if node.args.get("replacement") else ""
    return lambda batch: pc.replace_substring(text(batch), pattern=old, replacement=new)


def _matching(function, what: str):
    def handler(c, node: exp.Func) -> Evaluator:
        text = c.compile(node.this)
        pattern = c.literal(node.expression, what)
        return lambda batch: function(text(batch), pattern=pattern)
    return handler


handles(exp.StartsWith)(_matching(pc.starts_with, "starts_with's prefix"))
handles(exp.EndsWith)(_matching(pc.ends_with, "ends_with's suffix"))
handles(exp.Contains)(_matching(pc.match_substring, "contains' text"))
# DuckDB's regexp_matches, like Arrow, uses RE2 and matches anywhere in the text.
handles(exp.RegexpLike)(_matching(pc.match_substring_regex, "regexp_matches' pattern"))


@handles(exp.Round)
def _round(c, node: exp.Round) -> Evaluator:
    value = c.compile(node.this)
    digits = c.literal(node.args["decimals"], "round's digits") if node.args.get("decimals") else 0
    # DuckDB rounds halves away from zero, floats and decimals alike.
    return lambda batch: pc.round(value(batch), ndigits=digits, round_mode="half_towards_infinity")


# -- time ------------------------------------------------------------------------------------------------

_PART_FUNCTIONS = {exp.Year: "year", exp.Quarter: "quarter", exp.Month: "month", exp.Day: "day",
                   exp.DayOfMonth: "day", exp.Hour: "hour", exp.Minute: "minute", exp.Second: "second",
                   exp.DayOfWeek: "dow", exp.DayOfWeekIso: "isodow", exp.DayOfYear: "doy", exp.Week: "week",
                   exp.WeekOfYear: "week"}


@handles(*_PART_FUNCTIONS)
def _part_function(c, node: exp.Func) -> Evaluator:
    return _part(c, _PART_FUNCTIONS[type(node)], node.this)


@handles(exp.Extract)
def _extract(c, node: exp.Extract) -> Evaluator:
    return _part(c, node.this.name, node.expression)


def _part(c, part: str, value_node: exp.Expression) -> Evaluator:
    value = c.compile(value_node)
    return lambda batch: functions.date_part(part, value(batch))


@handles(exp.Anonymous)
def _anonymous(c, node: exp.Anonymous) -> Evaluator:
    if node.name.lower() == "date_part" and len(node.expressions) == 2:
        return _part(c, c.literal(node.expressions[0], "date_part's part"), node.expressions[1])
    raise c.refuse(node)


@handles(exp.TimestampTrunc, exp.DateTrunc)
def _date_trunc(c, node: exp.Func) -> Evaluator:
    unit_node = node.args["unit"]
    unit = unit_node.name if isinstance(unit_node, exp.Var) else c.literal(unit_node, "date_trunc's unit")
    value = c.compile(node.this)
    return lambda batch: functions.date_trunc(unit, value(batch))


@handles(exp.DateBin)
def _time_bucket(c, node: exp.DateBin) -> Evaluator:
    """time_bucket(INTERVAL 'n unit', x[, origin]): sqlglot keeps the origin in `unit` (or `origin`)."""
    months, micros = _interval(c, node.this)
    value = c.compile(node.expression)
    origin_node = node.args.get("origin") or node.args.get("unit")
    origin = c.literal(origin_node, "time_bucket's origin") if origin_node is not None else None
    if isinstance(origin, dt.date) and not isinstance(origin, dt.datetime):
        origin = dt.datetime.combine(origin, dt.time())
    if origin is not None and not isinstance(origin, dt.datetime):
        raise c.source.error("time_bucket's origin is a DATE or TIMESTAMP literal", origin_node)
    return lambda batch: functions.time_bucket(months, micros, value(batch), origin)


def _interval(c, node: exp.Expression) -> tuple[int, int]:
    if not isinstance(node, exp.Interval):
        raise c.source.error(f"time_bucket's width is an INTERVAL literal, not {c.source.snippet(node)}", node)
    text = node.this.name if node.this is not None else ""
    unit = node.args["unit"].name if node.args.get("unit") is not None else ""
    words = f"{text} {unit}".split()
    if len(words) != 2 or not words[0].isdigit():
        raise c.source.error(f"time_bucket's width is one count of one unit (INTERVAL '15 minutes'), not "
                             f"{c.source.snippet(node)}", node)
    try:
        return functions.interval_width(int(words[0]), words[1])
    except Exception as exc:
        raise c.source.error(str(exc), node) from None
