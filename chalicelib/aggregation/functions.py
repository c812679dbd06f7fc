"""The built-in exact aggregates. Each says how a batch of values becomes state (lift), how two states
combine (merge) and what a state means (finalize), all as Arrow hash-aggregate calls so they vectorize.

Float sums (sum, mean, and the variance family in moments.py) keep the sum of the *finite* values and count
the others apart: +inf, -inf and NaN. A float64 sum that has met them cannot be retracted by negation (inf -
inf is NaN, and NaN never leaves); counts subtract exactly, so a retraction stays a negated merge. Finalize
answers what IEEE addition, and DuckDB, give over the same values: NaN if any value is NaN or both infinities
occur, else the infinity that occurs, else the finite result; NULL for no values, as before. Integer and
decimal sums are exact and keep their states unchanged.

The finite values are summed in plain float64, in whatever order lifts, merges and retractions happen. Let the
t_i be the m finite values a group's sum has taken in over the job's life, a retracted value counted twice
(added, then negated), and S the exact sum of the values it holds now. While no partial sum overflows
(guaranteed when sum|t_i| <= 2**1023), the kept sum is within

    dS = gamma(m - 1) * sum|t_i|,   gamma(k) = k*u / (1 - k*u),   u = 2**-53

of S, whatever the summation tree (Higham, Accuracy and Stability of Numerical Algorithms, 4.2). A fresh
computation over the k values held now is itself within gamma(k - 1) * sum|x| of S, so the two agree within
2 * dS. A mean is within (1 + u) * dS / n + u * |S| / n + 2**-1075 of S / n. So retracting a large value takes
the small ones that were rounded away against it along: 1e300 + 1.0, then 1e300 retracted, leaves 0.0 (DuckDB's
SUM over 1e300, 1.0, -1e300 is 0.0 too).

Why not a compensated (two-sum, Neumaier) pair: it helps only if every addition is a two-sum, in lifts and in
merges alike (a retraction is a merge), and Arrow's hash kernels add plainly. It would take a per-group kernel
of our own on every lift and merge of every float state, to bring the bound down to about 2u * |S| +
O(m * u**2) * sum|t_i| where values cancel; DuckDB's SUM(DOUBLE) adds plainly too. Columns whose sums must be
exact are declared decimal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobDefinitionError
from ..expressions import Expression

# (state column, Arrow hash function, options): one step of a group-by aggregation.
Step = tuple[str, str, pc.FunctionOptions | None]

_SKIP_NULLS = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)  # SQL: MIN of no values is NULL
_ZERO_IF_EMPTY = pc.ScalarAggregateOptions(skip_nulls=True, min_count=0)


@dataclass(frozen=True)
class AggregateFunction:
    """A mergeable aggregate. `states` names the state columns an output `out` needs."""

    name: str
    takes_argument: bool = True
    # Additive states can be retracted by merging their negation (an object deleted or overwritten);
    # the others (min, max) are rebuilt from the retained partials instead.
    subtractable: ClassVar[bool] = False

    def states(self, out: str) -> list[str]:
        return [out]

    def state_types(self, value_type: pa.DataType | None) -> list[pa.DataType]:
        raise NotImplementedError

    def input_type(self, value_type: pa.DataType) -> pa.DataType | None:
        """The type input values are cast to before lifting, if they need one."""
        return None

    def inputs(self, value: str, values: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array | pa.ChunkedArray]:
        """The columns `lift` steps read, derived from the (cast) input values; most need only the values."""
        return {value: values}

    def for_values(self, value_type: pa.DataType | None) -> "AggregateFunction":
        """This function as it aggregates values of `value_type`: itself, unless the type changes the shape of
        its state (float sums count their non-finite values apart)."""
        return self

    def with_parameters(self, parameters: tuple) -> "AggregateFunction":
        """This function with literal parameters, as in `approx_quantile(x, 0.95)`; none by default."""
        if parameters:
            raise JobDefinitionError(f"{self.name}() takes exactly one expression")
        return self

    @property
    def identity(self) -> str:
        """What, beyond the aggregate's source text, decides the meaning of its state (a user function's code).
        Part of the plan's fingerprint when not empty."""
        return ""

    def lift(self, out: str, value: str) -> list[Step]:
        """Steps that turn the input column `value` into this aggregate's state columns."""
        raise NotImplementedError

    def merge(self, out: str) -> list[Step]:
        """Steps that combine state columns of several partials into one."""
        raise NotImplementedError

    def finalize(self, out: str, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        return table.column(out)


class Count(AggregateFunction):
    subtractable = True

    def state_types(self, value_type):
        return [pa.int64()]

    def lift(self, out, value):
        mode = "only_valid" if self.takes_argument else "all"
        return [(value, "count", pc.CountOptions(mode=mode))]

    def merge(self, out):
        return [(out, "sum", _ZERO_IF_EMPTY)]


def _sum_type(value_type: pa.DataType) -> pa.DataType:
    if pa.types.is_decimal(value_type):
        # Exact: money columns declared decimal(p, s) are summed without rounding, as SQL does.
        return pa.decimal128(38, value_type.scale)
    if pa.types.is_integer(value_type) or pa.types.is_boolean(value_type):
        # Like DuckDB's SUM(BIGINT) -> HUGEINT: integer sums cannot overflow into a wrong number.
        return pa.decimal128(38, 0)
    if pa.types.is_floating(value_type):
        return pa.float64()
    raise JobDefinitionError(f"cannot sum values of type {value_type}")


def _summable(value_type: pa.DataType) -> pa.DataType | None:
    if pa.types.is_integer(value_type) or pa.types.is_boolean(value_type):
        return _sum_type(value_type)
    return None


class Sum(AggregateFunction):
    """State: the sum (0 when there are no values) and how many values it has; SQL's SUM of no values is
    NULL, decided at finalize, so the state stays additive and retractable."""

    subtractable = True

    def states(self, out):
        return [out, f"{out}.n"]

    def state_types(self, value_type):
        return [_sum_type(value_type), pa.int64()]

    def input_type(self, value_type):
        return _summable(value_type)

    def lift(self, out, value):
        return [(value, "sum", _ZERO_IF_EMPTY), (value, "count", pc.CountOptions(mode="only_valid"))]

    def merge(self, out):
        return [(out, "sum", _ZERO_IF_EMPTY), (f"{out}.n", "sum", _ZERO_IF_EMPTY)]

    def for_values(self, value_type):
        return FloatSum(self.name) if is_float(value_type) else self

    def finalize(self, out, table):
        total = table.column(out)
        return pc.if_else(pc.equal(table.column(f"{out}.n"), 0), pa.scalar(None, total.type), total)


class Extreme(AggregateFunction):
    def state_types(self, value_type):
        if pa.types.is_nested(value_type) or pa.types.is_null(value_type):
            raise JobDefinitionError(f"{self.name} needs ordered values, not {value_type}")
        return [value_type]

    def lift(self, out, value):
        return [(value, self.name, _SKIP_NULLS)]

    def merge(self, out):
        return [(out, self.name, _SKIP_NULLS)]


class Mean(AggregateFunction):
    subtractable = True

    def states(self, out):
        return [f"{out}.sum", f"{out}.count"]

    def state_types(self, value_type):
        return [_sum_type(value_type), pa.int64()]

    def input_type(self, value_type):
        return _summable(value_type)

    def lift(self, out, value):
        return [(value, "sum", _ZERO_IF_EMPTY), (value, "count", pc.CountOptions(mode="only_valid"))]

    def merge(self, out):
        return [(f"{out}.sum", "sum", _ZERO_IF_EMPTY), (f"{out}.count", "sum", _ZERO_IF_EMPTY)]

    def for_values(self, value_type):
        return FloatMean(self.name) if is_float(value_type) else self

    def finalize(self, out, table):
        total = pc.cast(table.column(f"{out}.sum"), pa.float64())
        count = pc.cast(table.column(f"{out}.count"), pa.float64())
        return pc.if_else(pc.equal(count, 0), pa.scalar(None, pa.float64()), pc.divide(total, count))


# --- float sums: the finite values summed, the others counted (see the module docstring) -------------------

# Part of float jobs' fingerprints: kept float results from before the counts start over, not merge wrong.
FLOAT_STATES = "float64 sums of the finite values, the non-finite ones counted"

# Each non-finite kind a float sum counts: its state's suffix and the test that picks its values out.
_NON_FINITE = (("n_pos_inf", lambda values: pc.equal(values, math.inf)),
               ("n_neg_inf", lambda values: pc.equal(values, -math.inf)),
               ("n_nan", pc.is_nan))


def is_float(value_type: pa.DataType | None) -> bool:
    return value_type is not None and pa.types.is_floating(value_type)


def finite_or_zero(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The values with each non-finite one as 0.0; nulls stay null, so counting these still counts every value."""
    values = pc.cast(values, pa.float64())
    return pc.if_else(pc.is_finite(values), values, 0.0)


def ones_where(condition: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """1 where `condition` holds, else 0 (null for a null value): summed per group, how many values it holds for."""
    return pc.cast(condition, pa.int64())


class CountsNonFinite:
    """Sum and mean of floats: their state (the finite values' sum, how many values there are) plus how many
    values are +inf, -inf and NaN; finalize lets those decide, as IEEE addition and DuckDB's SUM and AVG do:
    NaN if any value is NaN or both infinities occur, else the infinity that occurs."""

    identity = FLOAT_STATES

    def states(self, out):
        return [*super().states(out), *self._counts(out)]

    def state_types(self, value_type):
        return [pa.float64(), pa.int64(), *(pa.int64() for _ in _NON_FINITE)]

    def input_type(self, value_type):
        return None

    def inputs(self, value, values):
        return {value: finite_or_zero(values), **{f"{value}.{kind}": ones_where(test(values))
                                                 for kind, test in _NON_FINITE}}

    def lift(self, out, value):
        return [*super().lift(out, value), *((f"{value}.{kind}", "sum", _ZERO_IF_EMPTY) for kind, _ in _NON_FINITE)]

    def merge(self, out):
        return [(state, "sum", _ZERO_IF_EMPTY) for state in self.states(out)]

    def finalize(self, out, table):
        finite = super().finalize(out, table)
        positive, negative, nan = (pc.greater(table.column(state), 0) for state in self._counts(out))
        infinity = pc.if_else(positive, math.inf, pc.if_else(negative, -math.inf, finite))
        return pc.if_else(pc.or_(nan, pc.and_(positive, negative)), math.nan, infinity)

    @staticmethod
    def _counts(out: str) -> list[str]:
        return [f"{out}.{kind}" for kind, _ in _NON_FINITE]


class FloatSum(CountsNonFinite, Sum):
    pass


class FloatMean(CountsNonFinite, Mean):
    pass


FUNCTIONS: dict[str, AggregateFunction] = {
    "count": Count("count"),
    "sum": Sum("sum"),
    "min": Extreme("min"),
    "max": Extreme("max"),
    "mean": Mean("mean"),
    "avg": Mean("mean"),
}
COUNT_ROWS = Count("count", takes_argument=False)


@dataclass(frozen=True)
class AggregateSpec:
    """One named output of a job: `revenue = sum(adRevenue)`."""

    out: str
    source: str
    function: AggregateFunction
    argument: Expression | None

    @property
    def states(self) -> list[str]:
        return self.function.states(self.out)


# Every partial also counts its rows per group, so a retraction knows when a group has no rows left.
ROWS = AggregateSpec("__rows", "count()", COUNT_ROWS, None)
