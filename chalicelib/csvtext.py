"""One value as a CSV field, the way exports write it and the client's CSV output does (tests compare the two):
a null is empty; decimals keep every digit and no exponent; floats as Python writes them (shortest round trip;
nan, inf); dates and timestamps ISO 8601; nested values (lists, structs) as JSON text. Standard library and
simplejson only: the client imports it without the engine."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import simplejson


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, dict, tuple)):
        # simplejson, not json: a Decimal stays a number with all its digits.
        return simplejson.dumps(value, use_decimal=True, ignore_nan=True, default=_iso, separators=(",", ":"))
    return str(value)


def _iso(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
