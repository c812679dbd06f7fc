"""A job's aggregation as data: filter, group keys and aggregates, with the Arrow kernels that apply them."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobDefinitionError, PartialMismatch
from ..expressions import Expression
from .functions import ROWS, AggregateSpec
from .grouped import GroupedAggregate
from .mapping import MapFunction

# Bump when the meaning of state columns changes: old partials then refuse to merge instead of lying.
STATE_FORMAT = 1


@dataclass(frozen=True)
class AggregationPlan:
    input_schema: pa.Schema
    keys: tuple[tuple[str, Expression], ...]
    aggregates: tuple[AggregateSpec, ...]
    filter: Expression | None = None
    map: MapFunction | None = None  # runs first; keys, filter and aggregates then read its columns
    # Served groups are those it holds for (SQL's HAVING). Not part of the fingerprint: the state is the same.
    having: Expression | None = None
    language: str = "python"  # of the expressions' source text, which the fingerprint holds
    state_schema: pa.Schema = field(init=False, compare=False)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.keys] + [spec.out for spec in self.aggregates]
        if len(set(names)) != len(names):
            raise JobDefinitionError(f"key and aggregate names must be distinct: {names}")
        if any(name.startswith("__") for name in names):
            raise JobDefinitionError("names starting with '__' are reserved for Tally's working columns")
        if not self.keys:
            raise JobDefinitionError("a job needs at least one group key")
        empty = (self.map.output_schema if self.map else self.input_schema).empty_table()
        try:
            if self.filter is not None:
                mask = self.filter.evaluate_array(empty)
                if not pa.types.is_boolean(mask.type):
                    raise JobDefinitionError(f"filter {self.filter.source!r} is not a condition")
            fields = [pa.field(name, expr.evaluate_array(empty).type) for name, expr in self.keys]
            # Each aggregate takes the form its values need: a float sum also counts its non-finite values.
            typed = tuple(replace(spec, function=spec.function.for_values(_value_type(spec, empty)))
                          for spec in self.aggregates)
            object.__setattr__(self, "aggregates", typed)
            for spec in self.specs:
                value_type = _value_type(spec, empty)
                types = spec.function.state_types(value_type)
                fields += [pa.field(state, t) for state, t in zip(spec.states, types)]
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise JobDefinitionError(f"expressions do not type-check against the columns: {exc}") from exc
        object.__setattr__(self, "state_schema", pa.schema(fields))
        if self.having is not None:
            try:
                kind = self.having.evaluate_array(self._values(self.empty())).type
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise JobDefinitionError(f"having {self.having.source!r} does not type-check: {exc}") from exc
            if not (pa.types.is_boolean(kind) or pa.types.is_null(kind)):
                raise JobDefinitionError(f"having {self.having.source!r} is not a condition")
        identity = {
            "state_format": STATE_FORMAT,
            "input": [f"{f.name}:{f.type}" for f in self.input_schema],
            "filter": self.filter.source if self.filter else None,
            "keys": [[name, expr.source] for name, expr in self.keys],
            "aggregates": [[spec.out, spec.source] for spec in self.aggregates],
        }
        code = [spec.function.identity for spec in self.aggregates if spec.function.identity]
        if self.map is not None:
            code.append(f"map:{self.map.identity}:{self.map.reads}:{self.map.output_schema}")
        if code:  # only then, so the fingerprints of jobs without user code stay what they were
            identity["code"] = code
        if self.language != "python":  # the same text may mean another thing in another language
            identity["language"] = self.language
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        object.__setattr__(self, "fingerprint", digest[:16])

    @property
    def specs(self) -> tuple[AggregateSpec, ...]:
        """The job's aggregates and the hidden row count every partial carries."""
        return (*self.aggregates, ROWS)

    @property
    def subtractable(self) -> bool:
        return all(spec.function.subtractable for spec in self.aggregates)

    @property
    def columns(self) -> frozenset[str]:
        """The input columns this plan reads; the rest need not be parsed."""
        if self.map is not None:
            return frozenset(self.map.reads)
        expressions = [expr for _, expr in self.keys] + [s.argument for s in self.aggregates if s.argument]
        if self.filter is not None:
            expressions.append(self.filter)
        return frozenset().union(*(expr.columns for expr in expressions))

    @property
    def result_schema(self) -> pa.Schema:
        """The finalized columns: keys, then one value per aggregate."""
        return self.finalize(self.empty()).schema

    @property
    def key_names(self) -> list[str]:
        return [name for name, _ in self.keys]

    def empty(self) -> pa.Table:
        return self.state_schema.empty_table()

    def lift(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """One batch of input rows to a partial: map, filter, compute keys, aggregate per group."""
        inputs = self._lift_inputs(batch)
        if inputs is None:
            return self.empty()
        columns, steps, targets, per_group = inputs
        grouped = self._group(pa.table(columns), steps, targets, per_group)
        return self._conform(grouped, targets)

    @cached_property
    def lifts_rows(self) -> bool:
        """Whether `lift_rows` can state each row on its own: every lift step has a per-row form (sum, count,
        min, max and what is built of them, such as mean and variance; not sketches or user aggregates)."""
        empty = self.map.output_schema.empty_table() if self.map else self.input_schema.empty_table()
        inputs = self._lift_inputs(empty, keep_empty=True)
        return not inputs[3] and all(_row_state(function, options, pa.array([], pa.int64())) is not None
                                     for _, function, options in inputs[1])

    def lift_rows(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """One batch to a partial that states each row on its own, keys repeating: what `lift` computes
        without the hash aggregation. A partial of (nearly) all-distinct keys (BDB 2b, 2c) is no smaller for
        being aggregated, and every partial is merged by the reducer anyway. Only when `lifts_rows`."""
        inputs = self._lift_inputs(batch)
        if inputs is None:
            return self.empty()
        columns, steps, targets, _ = inputs
        table = {name: columns[name] for name in self.key_names}
        for column, function, options in steps:
            table[f"{column}_{function}"] = _row_state(function, options, columns[column])
        return self._conform(pa.table(table), targets)

    def count_groups(self, batch: pa.RecordBatch | pa.Table) -> int:
        """How many groups `lift` would give for `batch`, without aggregating: its distinct keys among the rows
        the filter keeps."""
        batch = self._kept_rows(batch)
        if batch.num_rows == 0 or not self.keys:
            return min(batch.num_rows, 1)
        keys = pa.table({name: expr.evaluate_array(batch) for name, expr in self.keys})
        return keys.group_by(self.key_names, use_threads=False).aggregate([]).num_rows

    def _kept_rows(self, batch: pa.RecordBatch | pa.Table, mapped: bool = False) -> pa.RecordBatch | pa.Table:
        """The rows lifting groups: `batch` through the job's map function (unless `mapped` already) and filter."""
        if self.map is not None and not mapped:
            batch = self.map.apply(batch)
        if self.filter is not None:
            batch = batch.filter(self.filter.evaluate_array(batch))
        return batch

    def _lift_inputs(self, batch: pa.RecordBatch | pa.Table, keep_empty: bool = False):
        """What lifting `batch` groups: its working columns, the hash-aggregate steps over them, where each
        step's output goes and the grouped aggregates' builders; None for a batch the filter empties."""
        batch = self._kept_rows(batch, mapped=keep_empty)
        if batch.num_rows == 0 and not keep_empty:
            return None
        columns = {name: expr.evaluate_array(batch) for name, expr in self.keys}
        steps, targets, per_group = [], [], {}
        for index, spec in enumerate(self.specs):
            value = f"__value{index}"
            # count(*) and the hidden row count count the first key's values: computed above, not again.
            values = spec.argument.evaluate_array(batch) if spec.argument is not None else columns[self.keys[0][0]]
            cast_to = spec.function.input_type(values.type)
            columns.update(spec.function.inputs(value, values if cast_to is None else pc.cast(values, cast_to)))
            if isinstance(spec.function, GroupedAggregate):
                per_group[spec.out] = (spec.function.lift_groups, value)
            for (column, function, options), state in zip(spec.function.lift(spec.out, value), spec.states):
                steps.append((column, function, options))
                targets.append((state, f"{column}_{function}"))
        return columns, steps, targets, per_group

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        """Combine partials into one with a row per group. Inputs are never modified."""
        partials = [p for p in partials if p.num_rows]
        for partial in partials:
            if not partial.schema.equals(self.state_schema):
                raise PartialMismatch(f"partial schema {partial.schema} is not {self.state_schema}")
        if not partials:
            return self.empty()
        # Even one partial is grouped: a partial stated row by row (`lift_rows`) repeats its keys.
        combined = pa.concat_tables(partials)
        # Work on neutral column names: Arrow names outputs "<column>_<function>", which a key may also be.
        working = {name: combined.column(name) for name in self.key_names}
        steps, targets, per_group = [], [], {}
        for spec in self.specs:
            if isinstance(spec.function, GroupedAggregate):
                alias = f"__state{len(working)}"
                working[alias] = combined.column(spec.out)
                per_group[spec.out] = (spec.function.merge_groups, alias)
            for column, function, options in spec.function.merge(spec.out):
                alias = f"__state{len(working)}"
                working[alias] = combined.column(column)
                steps.append((alias, function, options))
                targets.append((column, f"{alias}_{function}"))
        grouped = self._group(pa.table(working), steps, targets, per_group)
        return self._conform(grouped, targets)

    def retract(self, result: pa.Table, removed: Sequence[pa.Table], added: Sequence[pa.Table] = ()) -> pa.Table:
        """`result` without the contributions `removed` and with `added`: merge the negated states, then
        drop groups left with no rows. Only for subtractable plans; the others rebuild from partials."""
        if not self.subtractable:
            raise PartialMismatch("min/max cannot be retracted; rebuild the result from the retained partials")
        merged = self.merge([result, *(self.negated(partial) for partial in removed), *added])
        return merged.filter(pc.not_equal(merged.column(ROWS.out), 0))

    def negated(self, partial: pa.Table) -> pa.Table:
        """A partial whose merge subtracts `partial`: every state negated, the keys kept. Subtractable only."""
        keys = set(self.key_names)
        columns = [partial.column(f.name) if f.name in keys else pc.negate_checked(partial.column(f.name))
                   for f in self.state_schema]
        return pa.Table.from_arrays(columns, schema=self.state_schema)

    def finalize(self, partial: pa.Table) -> pa.Table:
        """State columns to the values a user asked for, one column per aggregate; only the groups `having`
        holds for (NULL does not hold), when the job has one."""
        table = self._values(partial)
        if self.having is None:
            return table
        return table.filter(self.having.evaluate_array(table))

    def values(self, partial: pa.Table) -> pa.Table:
        """`finalize` without `having`: one row for each row of `partial`, in its order."""
        return self._values(partial)

    def _values(self, partial: pa.Table) -> pa.Table:
        columns = {name: partial.column(name) for name in self.key_names}
        for spec in self.aggregates:
            columns[spec.out] = spec.function.finalize(spec.out, partial)
        return pa.table(columns)

    def _group(self, table: pa.Table, steps: list, targets: list[tuple[str, str]],
               per_group: dict[str, tuple]) -> pa.Table:
        """Arrow's hash aggregation, plus the states of grouped aggregates: Arrow lists each group's row
        numbers once, and every grouped aggregate gets its column sorted by group with the group offsets."""
        if per_group:
            table = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
            steps = [*steps, ("__row", "list")]
        grouped = table.group_by(self.key_names, use_threads=False).aggregate(steps)
        if not per_group:
            return grouped
        rows = grouped.column("__row_list").combine_chunks()
        offsets = np.asarray(rows.offsets)
        order, offsets = rows.flatten(), offsets - offsets[0]
        for state, (combine, column) in per_group.items():
            values = table.column(column).take(order).combine_chunks()
            grouped = grouped.append_column(f"__grouped.{state}", combine(values, offsets))
            targets.append((state, f"__grouped.{state}"))
        return grouped

    def _conform(self, grouped: pa.Table, targets: list[tuple[str, str]]) -> pa.Table:
        produced = dict(targets)
        arrays = []
        for f in self.state_schema:
            column = grouped.column(produced.get(f.name, f.name))
            arrays.append(column if column.type == f.type else pc.cast(column, f.type))
        return pa.Table.from_arrays(arrays, schema=self.state_schema).combine_chunks()


def _value_type(spec: AggregateSpec, empty: pa.Table) -> pa.DataType | None:
    return spec.argument.evaluate_array(empty).type if spec.argument else None


_COUNT_ALL = pc.CountOptions(mode="all")


def _row_state(function: str, options, values):
    """The state of one row as its own group under the hash aggregate `function`, for every row at once; None
    when `function` has no such form here."""
    if function in ("min", "max"):
        return values  # a null stays null, as min/max of a group of nulls (min_count=1)
    if function == "count":
        if options == _COUNT_ALL or not values.null_count:
            return pa.array(np.ones(len(values), dtype=np.int64))
        return pc.cast(pc.is_valid(values), pa.int64())
    if function == "sum":
        if not values.null_count:
            return values
        zero = Decimal(0) if pa.types.is_decimal(values.type) else 0
        return pc.fill_null(values, pa.scalar(zero, values.type))  # min_count=0: a sum of nothing is 0
    return None
