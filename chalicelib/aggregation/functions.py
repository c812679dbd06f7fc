"""The built-in exact aggregates. Each says how a batch of values becomes state (lift), how two states
combine (merge) and what a state means (finalize), all as Arrow hash-aggregate calls so they vectorize."""
from __future__ import annotations

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

    def finalize(self, out, table):
        total = pc.cast(table.column(f"{out}.sum"), pa.float64())
        count = pc.cast(table.column(f"{out}.count"), pa.float64())
        return pc.if_else(pc.equal(count, 0), pa.scalar(None, pa.float64()), pc.divide(total, count))


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
