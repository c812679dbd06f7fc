"""A CSV column's values converted as Arrow's CSV reader converts them, value by value: the ones that do not
convert are found and left null, where the reader fails the whole block.

Used by the tolerant reading (formats.tolerant) on a block the typed reader failed on, read again as bytes. Its
results must be the reader's, or a file's good rows would read differently once it holds one bad row:
tests/test_formats.py compares the two value for value. The reader's rules (default options): a string is
never null and must be UTF-8; of any other type, the null values ("", "NA", "null", ...) are null; numbers
and dates may have blanks around them, timestamps and booleans may not; a boolean is one of the true or
false values exactly; a decimal's precision is that of its literal, not of the scaled value (12345678901234.5
fits decimal(18,6), 9223372036854775807 does not), and what fits is kept as the reader keeps it.

Finding the bad values: what can be told for a whole column at once (a boolean that is neither, a padded
timestamp, a decimal of too many digits) is; the rest is Arrow's cast, which fails a whole array, so it is
bisected: the halves that convert are kept, the others halved again. A cast of a slice costs microseconds,
so one bad value costs about 2*log2(rows) casts, and a column of nothing but bad values about two a row.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

_DEFAULTS = pa_csv.ConvertOptions()
NULL_VALUES = pa.array(_DEFAULTS.null_values, pa.string())
TRUE_VALUES = pa.array(_DEFAULTS.true_values, pa.string())
FALSE_VALUES = pa.array(_DEFAULTS.false_values, pa.string())
_BLANKS = " \t"  # what the reader trims off numbers and dates
# A decimal literal's digits as Arrow's Decimal128::FromString counts them: leading zeros are not precision. An
# exponent of more digits fails the cast anyway; keeping it short keeps its cast to int64 safe.
_DECIMAL_LITERAL = r"^[+-]?0*(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?(?:[eE]\+?(?P<exp>-?[0-9]{1,6}))?$"


def converted(values: pa.Array, to: pa.DataType) -> tuple[pa.Array, list[int]]:
    """`values` (binary) as type `to`, null where a value does not convert; and the indexes of those."""
    text, bad = _bisected(values, lambda part: part.cast(pa.string()), pa.string())
    if pa.types.is_string(to):
        return text, bad
    text = pc.if_else(pc.is_in(text, NULL_VALUES), _nulls(text, pa.string()), text)
    if pa.types.is_integer(to) or pa.types.is_floating(to) or pa.types.is_decimal(to) or pa.types.is_date(to):
        text = pc.utf8_trim(text, _BLANKS)
    rejected = _rejected(text, to)
    if rejected is not None:
        text = pc.if_else(rejected, _nulls(text, pa.string()), text)
        bad = sorted({*bad, *np.flatnonzero(rejected.to_numpy(zero_copy_only=False)).tolist()})
    if pa.types.is_boolean(to):
        return pc.if_else(pc.is_null(text), _nulls(text, to), pc.is_in(text, TRUE_VALUES)), bad
    if pa.types.is_decimal(to):
        # Cast at the widest precision, then keep the values as they are: the literal's precision was checked.
        wide, failed = _bisected(text, lambda part: part.cast(pa.decimal128(38, to.scale)),
                                 pa.decimal128(38, to.scale))
        return wide.view(to), sorted({*bad, *failed})
    typed, failed = _bisected(text, lambda part: part.cast(to), to)
    return typed, sorted({*bad, *failed})


def _rejected(text: pa.Array, to: pa.DataType) -> pa.BooleanArray | None:
    """Values known not to convert without a cast (false for nulls), or None if there is no such rule."""
    if pa.types.is_boolean(to):
        known = pc.or_(pc.is_in(text, TRUE_VALUES), pc.is_in(text, FALSE_VALUES))
        return pc.and_(pc.is_valid(text), pc.invert(known))
    if pa.types.is_timestamp(to):  # Arrow's cast reads " 2001-02-03"; the reader does not
        return pc.fill_null(pc.not_equal(text, pc.utf8_trim_whitespace(text)), False)
    if pa.types.is_decimal(to):
        parts = pc.extract_regex(text, _DECIMAL_LITERAL)
        whole, fraction = (pc.utf8_length(pc.struct_field(parts, name)).cast(pa.int64()) for name in ("whole", "frac"))
        exponent = pc.struct_field(parts, "exp")
        exponent = pc.fill_null(pc.if_else(pc.equal(exponent, ""), "0", exponent).cast(pa.int64()), 0)
        # A negative scale (1.5e3) is made 0 with zeros, which count: 1500 has 4 digits.
        digits = pc.add(pc.add(whole, fraction), pc.max_element_wise(pc.subtract(exponent, fraction), 0))
        return pc.fill_null(pc.greater(digits, to.precision), False)
    return None


def _bisected(values: pa.Array, convert: Callable[[pa.Array], pa.Array], to: pa.DataType
              ) -> tuple[pa.Array, list[int]]:
    """`convert(values)`, null where a value does not convert, and the indexes of those values."""
    try:
        return convert(values), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(values) == 1:
            return pa.nulls(1, to), [0]
    middle = len(values) // 2
    left, left_bad = _bisected(values.slice(0, middle), convert, to)
    right, right_bad = _bisected(values.slice(middle), convert, to)
    return pa.concat_arrays([left, right]), left_bad + [middle + index for index in right_bad]


def _nulls(like: pa.Array, to: pa.DataType) -> pa.Array:
    # An array, not a null scalar: if_else with a null scalar breaks a sliced string array's offsets (pyarrow 20).
    return pa.nulls(len(like), to)
