"""Variance and standard deviation from mergeable moments: per group the count, the sum and the sum of
squares. All three are plain sums, so merging is Arrow's hash sum and a deleted object's contribution is
retracted by negation, like sum and mean.

Integer and decimal inputs keep their sums exactly (decimal, the squares in decimal256), so the variance is
computed from exact moments and only its final division is rounded. Float inputs keep float64 sums: the
textbook formula then loses digits when the mean dwarfs the spread (relative error about
2**-52 * (mean**2 + variance) / variance); declare such columns decimal to avoid it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobDefinitionError
from .functions import _ZERO_IF_EMPTY, AggregateFunction, _sum_type


def _square_type(value_type: pa.DataType) -> tuple[pa.DataType, pa.DataType]:
    """(the type values are squared in, the type squares are summed in)."""
    if pa.types.is_floating(value_type):
        return pa.float64(), pa.float64()
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
        if pa.types.is_floating(total.type):
            variance = pc.divide(pc.subtract(squares, pc.divide(pc.multiply(total, total), pc.cast(n, pa.float64()))),
                                 pc.cast(pc.subtract(n, 1) if self.sample else n, pa.float64()))
            values = [None if count < (2 if self.sample else 1) else max(v, 0.0)  # rounding can dip below 0
                      for count, v in zip(n.to_pylist(), variance.to_pylist())]
        else:
            values = [self._exact(count, s, q) for count, s, q in zip(n.to_pylist(), total.to_pylist(),
                                                                       squares.to_pylist())]
        if self.root:
            values = [None if v is None else math.sqrt(v) for v in values]
        return pa.array(values, pa.float64())

    def _exact(self, n: int, total: Decimal, squares: Decimal) -> float | None:
        if n < (2 if self.sample else 1):
            return None
        with localcontext() as context:
            context.prec = 160  # exact: 76-digit squares times a 19-digit count, and the square of the sum
            centered = n * squares - total * total
            return float(centered / (n * (n - 1 if self.sample else n)))


MOMENTS: dict[str, AggregateFunction] = {
    "var_samp": Moments("var_samp"),
    "variance": Moments("var_samp"),
    "var_pop": Moments("var_pop", sample=False),
    "stddev_samp": Moments("stddev_samp", root=True),
    "stddev": Moments("stddev_samp", root=True),
    "stddev_pop": Moments("stddev_pop", sample=False, root=True),
}
