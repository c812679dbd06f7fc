"""Variance and standard deviation from mergeable moments: per group the count, the sum and the sum of
squares. All three are plain sums, so merging is Arrow's hash sum and a deleted object's contribution is
retracted by negation, like sum and mean.

Integer and decimal inputs keep their sums exactly (decimal, the squares in decimal256), so the variance is
computed from exact moments and only its final division is rounded.

Float inputs keep float64 moments of their finite values and count the non-finite ones apart, so deleting an
object that held inf or NaN leaves a variance as if it had never been there (functions.py says why). Any
non-finite value makes the variance NaN, as in DuckDB and PostgreSQL: the deviation of an infinity from the
mean is inf - inf. Which kind it was cannot change that, so one count serves. A sample variance of one value
is NULL whatever the value, as in DuckDB. A population variance of one non-finite value is NaN here, as in
PostgreSQL; DuckDB answers 0.0 for any one value without looking at it, which would hide a NaN input.

The finite moments carry the error bound functions.py states for float sums, over the same m values t_i a
group has taken in (retracted ones twice): the sum S is within dS = gamma(m - 1) * sum|t_i|, the sum of squares
Q within dQ = gamma(m) * sum t_i**2 + m * 2**-1074 (the squares are rounded, or underflow). The textbook formula
(Q - S**2 / n) / d, d = n - 1 (sample) or n (population), then is within

    (dQ + (2|S| + dS) * dS / n + gamma(4) * (Q + dQ + (|S| + dS)**2 / n)) / d + 2**-1072

of the exact variance; a standard deviation within the square root of that, plus u * sqrt(computed variance)
for the root's own rounding. The bound is relative to the mean square, not to the variance: when the mean dwarfs
the spread, the digits cancel (relative error about 2**-52 * (mean**2 + variance) / variance). It holds while
no square overflows, which m * sum t_i**2 <= 2**1023 guarantees (|x| up to about 1e150 for a few thousand
values). Declare columns that need more decimal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobDefinitionError
from .functions import (_ZERO_IF_EMPTY, FLOAT_STATES, AggregateFunction, _sum_type, finite_or_zero, is_float,
                        ones_where)


def _square_type(value_type: pa.DataType) -> tuple[pa.DataType, pa.DataType]:
    """(the type values are squared in, the type squares are summed in)."""
    if pa.types.is_integer(value_type):
        return pa.decimal256(19, 0), pa.decimal256(76, 0)
    if pa.types.is_decimal(value_type):
        if value_type.precision > 37:  # the square of a decimal(38, s) needs 77 digits: more than Arrow has
            raise JobDefinitionError(f"variance needs decimals of at most 37 digits, not {value_type}")
        return pa.decimal256(value_type.precision, value_type.scale), pa.decimal256(76, 2 * value_type.scale)
    raise JobDefinitionError(f"variance needs numbers, not {value_type}")


@dataclass(frozen=True)
class Moments(AggregateFunction):
    """`var_samp`, `var_pop`, `stddev_samp`, `stddev_pop` with SQL semantics: nulls skipped, NULL when
    there are fewer than 2 values (sample) or none (population)."""

    sample: bool = True
    root: bool = False
    subtractable = True

    def for_values(self, value_type):
        return FloatMoments(self.name, sample=self.sample, root=self.root) if is_float(value_type) else self

    def states(self, out):
        return [f"{out}.n", f"{out}.sum", f"{out}.sumsq"]

    def state_types(self, value_type):
        squares = _square_type(value_type)[1]  # first: its error names what variance needs
        return [pa.int64(), _sum_type(value_type), squares]

    def inputs(self, value, values):
        square_in, sum_in = _square_type(values.type)
        as_square_in = pc.cast(values, square_in)
        return {value: pc.cast(values, _sum_type(values.type)),
                f"{value}.sq": pc.cast(pc.multiply_checked(as_square_in, as_square_in), sum_in)}

    def lift(self, out, value):
        return [(value, "count", pc.CountOptions(mode="only_valid")), (value, "sum", _ZERO_IF_EMPTY),
                (f"{value}.sq", "sum", _ZERO_IF_EMPTY)]

    def merge(self, out):
        return [(state, "sum", _ZERO_IF_EMPTY) for state in self.states(out)]

    def finalize(self, out, table):
        n, total, squares = (table.column(state) for state in self.states(out))
        values = [self._exact(count, s, q) for count, s, q in zip(n.to_pylist(), total.to_pylist(),
                                                                   squares.to_pylist())]
        return self._rooted(values)

    def _too_few(self, n: int) -> bool:
        return n < (2 if self.sample else 1)

    def _rooted(self, variances: list[float | None]) -> pa.Array:
        if self.root:
            variances = [None if v is None else math.sqrt(v) for v in variances]
        return pa.array(variances, pa.float64())

    def _exact(self, n: int, total: Decimal, squares: Decimal) -> float | None:
        if self._too_few(n):
            return None
        with localcontext() as context:
            context.prec = 160  # exact: 76-digit squares times a 19-digit count, and the square of the sum
            centered = n * squares - total * total
            return float(centered / (n * (n - 1 if self.sample else n)))


@dataclass(frozen=True)
class FloatMoments(Moments):
    """Moments of floats: n counts every value, the sums take the finite ones, and `n_non_finite` the others."""

    identity = FLOAT_STATES

    def states(self, out):
        return [*super().states(out), f"{out}.n_non_finite"]

    def state_types(self, value_type):
        return [pa.int64(), pa.float64(), pa.float64(), pa.int64()]

    def inputs(self, value, values):
        finite = finite_or_zero(values)
        return {value: finite, f"{value}.sq": pc.multiply(finite, finite),
                f"{value}.non_finite": ones_where(pc.invert(pc.is_finite(values)))}

    def lift(self, out, value):
        return [*super().lift(out, value), (f"{value}.non_finite", "sum", _ZERO_IF_EMPTY)]

    def finalize(self, out, table):
        n, total, squares, non_finite = (table.column(state) for state in self.states(out))
        variance = pc.divide(pc.subtract(squares, pc.divide(pc.multiply(total, total), pc.cast(n, pa.float64()))),
                             pc.cast(pc.subtract(n, 1) if self.sample else n, pa.float64()))
        values = [None if self._too_few(count) else math.nan if others > 0 else max(v, 0.0)  # rounding: below 0
                  for count, others, v in zip(n.to_pylist(), non_finite.to_pylist(), variance.to_pylist())]
        return self._rooted(values)


MOMENTS: dict[str, AggregateFunction] = {
    "var_samp": Moments("var_samp"),
    "variance": Moments("var_samp"),
    "var_pop": Moments("var_pop", sample=False),
    "stddev_samp": Moments("stddev_samp", root=True),
    "stddev": Moments("stddev_samp", root=True),
    "stddev_pop": Moments("stddev_pop", sample=False, root=True),
}
