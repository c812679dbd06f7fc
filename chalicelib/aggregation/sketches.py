"""Approximate aggregates from Apache DataSketches, kept per group in each sketch's compact serialized form.

| aggregate | sketch | error bound (defaults) |
|---|---|---|
| `approx_distinct(x[, lg_k=12])` | HLL (HLL_4) | relative standard error 1.04 / sqrt(2**lg_k): 1.6 % at lg_k 12; 3 standard errors (99.7 %) = 4.9 % |
| `approx_quantile(x, q[, k=200])` | KLL (doubles) | the answer's rank is within ±1.33 % of q at k 200, with 99 % confidence (`normalized rank error`) |
| `top_k(x, k[, lg_max_k=10])` | frequent items (strings) | each count within ±3.5 / (0.75 * 2**lg_max_k) of the group's rows (0.46 % at 10); exact while the group has fewer than 0.75 * 2**lg_max_k distinct values |

All three merge (union) without losing accuracy, so partials combine in any order, but none can be
subtracted: deleting or overwriting an input rebuilds the result from the retained partials, as for min/max.
Lifting costs a Python call per group (KLL: one numpy update) or per distinct (group, value) (HLL, top-k):
this is the slower path next to the exact aggregates.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import datasketches as ds
import numpy as np
import pyarrow as pa

from ..errors import JobDefinitionError
from .grouped import GroupedAggregate, group_ids, group_slices, python_values, without_nulls


def _integer(value, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise JobDefinitionError(f"{name} is an integer from {low} to {high}, not {value!r}")
    return value


def _is_number(value_type: pa.DataType) -> bool:
    return pa.types.is_integer(value_type) or pa.types.is_floating(value_type) or pa.types.is_decimal(value_type)


@dataclass(frozen=True)
class ApproxDistinct(GroupedAggregate):
    lg_k: int = 12

    def with_parameters(self, parameters):
        if len(parameters) > 1:
            raise JobDefinitionError("approx_distinct(x[, lg_k]) takes at most one parameter")
        return replace(self, lg_k=_integer(parameters[0], "lg_k", 4, 21)) if parameters else self

    def check_input(self, value_type):
        if value_type is None or pa.types.is_nested(value_type) or pa.types.is_null(value_type):
            raise JobDefinitionError(f"approx_distinct needs plain values, not {value_type}")

    def input_type(self, value_type):
        # The sketch hashes ints, floats and strings; dates and times count as their integer ticks, and
        # decimals as their canonical text (a column has one scale, so equal values have equal text).
        if pa.types.is_temporal(value_type):
            return pa.int64()
        if pa.types.is_decimal(value_type) or pa.types.is_boolean(value_type):
            return pa.string()
        return None

    def lift_groups(self, values, offsets):
        # A value seen twice changes nothing in an HLL sketch: each distinct (group, value) pair updates it once.
        return _per_distinct_pairs(values, offsets, self._sketch)

    def _sketch(self, distinct: list) -> bytes:
        sketch = ds.hll_sketch(self.lg_k, ds.HLL_4)
        deque(map(sketch.update, distinct), maxlen=0)  # the binding's per-value call from `map`, not a loop
        return sketch.serialize_compact()

    def merge_states(self, states):
        union = ds.hll_union(self.lg_k)
        for state in states:
            union.update(ds.hll_sketch.deserialize(state))
        return union.get_result(ds.HLL_4).serialize_compact()

    @property
    def result_type(self):
        return pa.int64()

    def finalize_state(self, state):
        return 0 if state is None else round(ds.hll_sketch.deserialize(state).get_estimate())


@dataclass(frozen=True)
class ApproxQuantile(GroupedAggregate):
    q: float = 0.5
    k: int = 200

    def with_parameters(self, parameters):
        if not 1 <= len(parameters) <= 2:
            raise JobDefinitionError("approx_quantile(x, q[, k]) takes the quantile q and optionally k")
        q = parameters[0]
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            raise JobDefinitionError(f"the quantile q is a number from 0 to 1, not {q!r}")
        k = _integer(parameters[1], "k", 8, 65535) if len(parameters) > 1 else self.k
        return replace(self, q=float(q), k=k)

    def check_input(self, value_type):
        if value_type is None or not _is_number(value_type):
            raise JobDefinitionError(f"approx_quantile needs numbers, not {value_type}")

    def input_type(self, value_type):
        return pa.float64()

    def lift_groups(self, values, offsets):
        # One numpy update per group: the KLL binding takes whole arrays.
        values, offsets = without_nulls(values, offsets)
        numbers = np.array(values.to_numpy(zero_copy_only=False), dtype=np.float64)  # writable: the binding needs it
        states = []
        for start, stop in group_slices(offsets):
            if stop == start:
                states.append(None)
                continue
            sketch = ds.kll_doubles_sketch(self.k)
            sketch.update(numbers[start:stop])
            states.append(sketch.serialize())
        return pa.array(states, pa.binary())

    def merge_states(self, states):
        merged = ds.kll_doubles_sketch(self.k)
        for state in states:
            merged.merge(ds.kll_doubles_sketch.deserialize(state))
        return merged.serialize()

    @property
    def result_type(self):
        return pa.float64()

    def finalize_state(self, state):
        # Inclusive ranks: the smallest value with at least q of the values at or below it, as SQL's
        # quantile_disc answers exactly.
        return None if state is None else ds.kll_doubles_sketch.deserialize(state).get_quantile(self.q, True)


TOP_K_TYPE = pa.list_(pa.struct([("value", pa.string()), ("count", pa.int64())]))


@dataclass(frozen=True)
class TopK(GroupedAggregate):
    k: int = 10
    lg_max_k: int = 10

    def with_parameters(self, parameters):
        if not 1 <= len(parameters) <= 2:
            raise JobDefinitionError("top_k(x, k[, lg_max_k]) takes k and optionally lg_max_k")
        k = _integer(parameters[0], "k", 1, 1000)
        lg_max_k = _integer(parameters[1], "lg_max_k", 3, 21) if len(parameters) > 1 else self.lg_max_k
        if k > 0.75 * 2 ** lg_max_k:
            raise JobDefinitionError(f"top_k keeps at most {int(0.75 * 2 ** lg_max_k)} values at lg_max_k "
                                     f"{lg_max_k}; raise lg_max_k for k = {k}")
        return replace(self, k=k, lg_max_k=lg_max_k)

    def check_input(self, value_type):
        if value_type is None or pa.types.is_nested(value_type) or pa.types.is_null(value_type):
            raise JobDefinitionError(f"top_k needs plain values, not {value_type}")

    def input_type(self, value_type):
        return None if pa.types.is_string(value_type) else pa.string()

    def lift_groups(self, values, offsets):
        # Count each (group, value) pair with Arrow first: the sketch then sees one weighted update per
        # distinct pair, not one per row.
        return _per_distinct_pairs(values, offsets, self._sketch, counted=True)

    def _sketch(self, words: list, counts: list) -> bytes:
        sketch = ds.frequent_strings_sketch(self.lg_max_k)
        deque(map(sketch.update, words, counts), maxlen=0)
        return sketch.serialize()

    def merge_states(self, states):
        merged = ds.frequent_strings_sketch(self.lg_max_k)
        for state in states:
            merged.merge(ds.frequent_strings_sketch.deserialize(state))
        return merged.serialize()

    @property
    def result_type(self):
        return TOP_K_TYPE

    def finalize_state(self, state):
        if state is None:
            return []
        items = ds.frequent_strings_sketch.deserialize(state).get_frequent_items(ds.NO_FALSE_NEGATIVES, 0)
        # Ties go to the smaller value, so the answer does not depend on the sketch's internal order.
        ranked = sorted(items, key=lambda item: (-item[1], item[0]))[: self.k]
        return [{"value": value, "count": count} for value, count, _, _ in ranked]


def _per_distinct_pairs(values: pa.Array, offsets: np.ndarray, sketch, counted: bool = False) -> pa.Array:
    """One state per group of `values` (sorted by group): `sketch(distinct values[, their counts])` built from
    the group's distinct non-null values, which Arrow finds first; None for a group without any."""
    values, offsets = without_nulls(values, offsets)
    pairs = (pa.table({"g": group_ids(offsets), "v": values})
             .group_by(["g", "v"], use_threads=False).aggregate([("v", "count")] if counted else [])
             .sort_by("g").combine_chunks())
    starts = np.searchsorted(np.asarray(pairs.column("g")), np.arange(len(offsets)), side="left")
    columns = [python_values(pairs.column(name)) for name in (("v", "v_count") if counted else ("v",))]
    return pa.array([sketch(*(column[start:stop] for column in columns)) if stop > start else None
                     for start, stop in group_slices(starts)], pa.binary())


SKETCHES: dict[str, GroupedAggregate] = {
    "approx_distinct": ApproxDistinct("approx_distinct"),
    "approx_count_distinct": ApproxDistinct("approx_distinct"),
    "approx_quantile": ApproxQuantile("approx_quantile"),
    "top_k": TopK("top_k"),
}
