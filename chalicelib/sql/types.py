"""SQL values over Arrow: literals typed as DuckDB types them, the casts the project's column types allow (with
DuckDB's rounding), and the implicit conversions SQL makes where two operands meet."""
from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..expressions import Value

DType = exp.DataType.Type
# The project's column types (tables.arrow_type), by the SQL names DuckDB gives them.
_CAST_TYPES = {
    DType.TEXT: pa.string(), DType.VARCHAR: pa.string(), DType.CHAR: pa.string(), DType.NVARCHAR: pa.string(),
    DType.BIGINT: pa.int64(), DType.INT: pa.int32(), DType.DOUBLE: pa.float64(), DType.BOOLEAN: pa.bool_(),
    DType.DATE: pa.date32(), DType.TIMESTAMP: pa.timestamp("us"), DType.TIMESTAMPNTZ: pa.timestamp("us"),
}
CAST_NAMES = "VARCHAR, BIGINT, INTEGER, DOUBLE, BOOLEAN, DATE, TIMESTAMP, DECIMAL(p, s)"


def type_of(value: Value) -> pa.DataType:
    return value.type


def cast_type(data_type: exp.DataType) -> pa.DataType | None:
    """The Arrow type of a CAST's target; None for a type outside the project's."""
    if data_type.this == DType.DECIMAL:
        params = [int(p.name) for p in data_type.expressions]
        precision, scale = (params + [18, 3][len(params):])[:2] if params else (18, 3)
        if not (1 <= precision <= 38 and 0 <= scale <= precision):
            return None
        return pa.decimal128(precision, scale)
    return _CAST_TYPES.get(data_type.this)


def number(text: str) -> pa.Scalar:
    """A numeric literal as DuckDB types it: 2 an integer, 1.5 a DECIMAL(2,1) (exact), 1e3 a DOUBLE."""
    if "e" in text.lower():
        return pa.scalar(float(text), pa.float64())
    if "." not in text:
        return pa.scalar(int(text), pa.int64())
    value = Decimal(text)
    digits = len(value.as_tuple().digits)
    scale = -value.as_tuple().exponent
    return pa.scalar(value, pa.decimal128(max(digits, scale, 1), scale))


def cast(value: Value, target: pa.DataType) -> Value:
    """CAST(value AS target) as DuckDB computes it: numbers to integers and decimals rounded (floats half to
    even, decimals half away from zero), text trimmed before it is read, timestamps written without a zero
    fraction."""
    source = type_of(value)
    if source.equals(target):
        return value
    if pa.types.is_null(source):
        return pc.cast(value, target)
    if pa.types.is_integer(target) and pa.types.is_floating(source):
        value = pc.round(value, round_mode="half_to_even")
    elif pa.types.is_integer(target) and pa.types.is_decimal(source):
        value = pc.round(value, round_mode="half_towards_infinity")
    elif pa.types.is_decimal(target) and pa.types.is_decimal(source) and target.scale < source.scale:
        value = pc.round(value, ndigits=target.scale, round_mode="half_towards_infinity")
    elif pa.types.is_decimal(target) and pa.types.is_integer(source):
        value = pc.cast(value, pa.decimal128(38, target.scale))  # then checked against the target's precision
    elif pa.types.is_string(source) and not pa.types.is_string(target):
        value = pc.utf8_trim_whitespace(value)
    elif pa.types.is_string(target) and pa.types.is_timestamp(source):
        return _timestamp_text(value)
    elif pa.types.is_date(target) and pa.types.is_timestamp(source):
        return pc.cast(pc.floor_temporal(value, unit="day"), target)
    return pc.cast(value, target)


def _timestamp_text(value: Value) -> Value:
    whole = pc.cast(pc.floor_temporal(value, unit="second"), pa.timestamp("s"))  # %S would print a fraction
    seconds = pc.strftime(whole, format="%Y-%m-%d %H:%M:%S")
    micros = pc.add(pc.multiply(pc.millisecond(value), 1000), pc.microsecond(value))
    fraction = pc.utf8_rtrim(pc.utf8_lpad(pc.cast(micros, pa.string()), width=6, padding="0"), characters="0")
    with_fraction = pc.binary_join_element_wise(seconds, ".", fraction, "")
    return pc.if_else(pc.equal(micros, 0), seconds, with_fraction)


def is_literal(node: exp.Expression) -> bool:
    return isinstance(node, (exp.Literal, exp.Null, exp.Boolean)) or (
        isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal))


def coerce(kinds: list[pa.DataType], literal: list[bool]) -> list[pa.DataType | None]:
    """The type each operand meeting in one operation is cast to (None: as it is), as SQL makes operands
    comparable: a NULL, or a text literal, takes the type of the other operands (`ts >= '2024-01-01'`,
    `status = '200'`); columns are never converted from text implicitly, as in DuckDB."""
    loose = [pa.types.is_null(k) or (lit and pa.types.is_string(k)) for k, lit in zip(kinds, literal)]
    firm = [k for k, is_loose in zip(kinds, loose) if not is_loose] or [k for k in kinds if not pa.types.is_null(k)]
    if not firm:
        return [None] * len(kinds)
    return [firm[0] if is_loose and not k.equals(firm[0]) else None for k, is_loose in zip(kinds, loose)]
