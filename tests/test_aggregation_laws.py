"""Merge laws of the built-in aggregates, and the wire format of partials.

A partial is one row per group; `merge` must be a commutative monoid with the empty partial as identity, and
`lift` must distribute over concatenation — that is what lets mappers, byte ranges and reducers combine work
in any order and any grouping. `check_monoid_laws` states the laws once, for every aggregate; hypothesis
supplies the rows (integer, float and decimal(18,6) values, nulls included, null group keys included).
"""
from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from decimal import Decimal
from functools import cache

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.aggregation.codec import encode, decode
from chalicelib.aggregation.grouped import GroupedAggregate
from chalicelib.aggregation.plan import AggregationPlan
from chalicelib.errors import PartialMismatch
from chalicelib.jobs import CsvFormat, Job

from . import float_referee

# tests/conftest.py owns the global hypothesis profile; these are this file's own, picked by the same variable
# and applied per test, so loading them changes nothing for other test files.
settings.register_profile("aggregation-laws-dev", max_examples=50, deadline=None)
settings.register_profile("aggregation-laws-ci", max_examples=400, deadline=None)
_PROFILE = "ci" if os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci" else "dev"
LAWS = settings.get_profile(f"aggregation-laws-{_PROFILE}")

# Every built-in aggregate, over the one value column `v`, grouped by the string column `k`.
AGGREGATES = {
    "rows": "count()",
    "present": "count(v)",
    "total": "sum(v)",
    "low": "min(v)",
    "high": "max(v)",
    "average": "mean(v)",
    "spread": "stddev_samp(v)",
    "variance": "var_pop(v)",
    "distinct": "approx_distinct(v)",
    "median": "approx_quantile(v, 0.5)",
    "top": "top_k(v, 3)",
}
VALUES = {
    # bounded so that no sum of a few hundred values overflows int64 or loses exactness in a float64 mean
    "int64": st.integers(min_value=-10**12, max_value=10**12),
    "float64": st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    "decimal(18,6)": st.decimals(min_value=-10**12 + 1, max_value=10**12 - 1, places=6,
                                 allow_nan=False, allow_infinity=False),
}
VALUE_TYPES = list(VALUES)
KEYS = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "ab", ""]))


@cache
def plan_for(value_type: str) -> AggregationPlan:
    job = Job(
        name="t", prefix="p/",
        format=CsvFormat(columns={"k": "string", "v": value_type}),
        keys={"k": "k"}, aggregates=AGGREGATES,
    )
    return job.plan


def rows_of(value_type: str, max_size: int = 40) -> st.SearchStrategy[list[tuple]]:
    return st.lists(st.tuples(KEYS, st.none() | VALUES[value_type]), max_size=max_size)


def table_of(plan: AggregationPlan, rows: list[tuple]) -> pa.Table:
    keys, values = zip(*rows) if rows else ((), ())
    return pa.table([pa.array(keys, pa.string()), pa.array(values, plan.input_schema.field("v").type)],
                    schema=plan.input_schema)


def lifted(plan: AggregationPlan, rows: list[tuple]) -> pa.Table:
    return plan.lift(table_of(plan, rows))


# --- equivalence of partials -----------------------------------------------------------------------------


def _float_sums(plan: AggregationPlan) -> set[str]:
    """State columns holding float sums: equal only up to rounding, whatever order the additions ran in."""
    return {state for spec in plan.aggregates if spec.function.name in ("sum", "mean", "var_samp", "var_pop",
                                                                        "stddev_samp", "stddev_pop")
            for state in spec.states if plan.state_schema.field(state).type == pa.float64()}


def _sketches(plan: AggregationPlan) -> dict:
    """Binary states (sketches, user aggregates): equal when they mean the same, i.e. finalize to the same value.
    Their bytes may differ (a union's sketch is laid out otherwise than one built in a single pass)."""
    return {spec.out: spec.function for spec in plan.aggregates if isinstance(spec.function, GroupedAggregate)}


def _same_value(x, y, inexact: bool) -> bool:
    if x is None or y is None or not inexact:
        return x == y and (x is None) == (y is None)
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)


def assert_same_partial(plan: AggregationPlan, actual: pa.Table, expected: pa.Table) -> None:
    """Equal as partials: the state schema, one row per group, and per group the same states — exactly, except
    float sums (math.isclose). Row order is not part of a partial's meaning, so rows are compared by key."""
    for table in (actual, expected):
        assert table.schema.equals(plan.state_schema)
        keys = table.select(plan.key_names).to_pylist()
        assert len(keys) == len({tuple(k.values()) for k in keys}), f"a group appears twice: {keys}"
    order = [(name, "ascending") for name in plan.key_names]
    actual_rows, expected_rows = actual.sort_by(order).to_pylist(), expected.sort_by(order).to_pylist()
    assert len(actual_rows) == len(expected_rows), (actual_rows, expected_rows)
    inexact, sketches = _float_sums(plan), _sketches(plan)
    for got, want in zip(actual_rows, expected_rows):
        for column in plan.state_schema.names:
            if column in sketches:
                meaning = sketches[column].finalize_state
                assert meaning(got[column]) == meaning(want[column]), (column, got, want)
            else:
                assert _same_value(got[column], want[column], column in inexact), (column, got, want)


def check_monoid_laws(plan: AggregationPlan, a: pa.Table, b: pa.Table, c: pa.Table) -> None:
    """merge is a commutative monoid on partials: identity, commutativity, associativity (Algebird's laws)."""
    empty = plan.empty()
    assert_same_partial(plan, plan.merge([a, empty]), a)
    assert_same_partial(plan, plan.merge([empty, a]), a)
    assert_same_partial(plan, plan.merge([]), empty)
    assert_same_partial(plan, plan.merge([a, b]), plan.merge([b, a]))
    left = plan.merge([plan.merge([a, b]), c])
    assert_same_partial(plan, left, plan.merge([a, plan.merge([b, c])]))
    assert_same_partial(plan, plan.merge([a, b, c]), left)


# --- the laws ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_merge_is_a_commutative_monoid(value_type, data):
    plan = plan_for(value_type)
    a, b, c = (lifted(plan, data.draw(rows_of(value_type), label=name)) for name in "abc")
    check_monoid_laws(plan, a, b, c)


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_lift_of_a_concatenation_is_the_merge_of_the_lifts(value_type, data):
    """The law byte-range splitting relies on: any split of the rows gives the same partial."""
    plan = plan_for(value_type)
    xs = table_of(plan, data.draw(rows_of(value_type), label="xs"))
    ys = table_of(plan, data.draw(rows_of(value_type), label="ys"))
    assert_same_partial(plan, plan.lift(pa.concat_tables([xs, ys])), plan.merge([plan.lift(xs), plan.lift(ys)]))


@cache
def row_plan_for(value_type: str) -> AggregationPlan:
    """The aggregates that have a per-row state (every one but the sketches)."""
    by_row = {out: source for out, source in AGGREGATES.items() if out not in ("distinct", "median", "top")}
    return Job(name="r", prefix="p/", format=CsvFormat(columns={"k": "string", "v": value_type}),
               keys={"k": "k"}, aggregates=by_row).plan


def test_only_aggregates_with_a_per_row_state_lift_row_by_row():
    assert row_plan_for("int64").lifts_rows and not plan_for("int64").lifts_rows


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_a_partial_stated_row_by_row_merges_as_the_aggregated_one(value_type, data):
    """What the mapper relies on when it skips pre-aggregating nearly distinct keys: keys may repeat in a
    partial, and merging gives what merging the aggregated partial gives."""
    plan = row_plan_for(value_type)
    rows = table_of(plan, data.draw(rows_of(value_type), label="rows"))
    by_row = plan.lift_rows(rows)
    assert by_row.schema.equals(plan.state_schema) and by_row.num_rows == rows.num_rows
    assert_same_partial(plan, plan.merge([by_row, plan.lift(rows)]), plan.merge([plan.lift(rows), plan.lift(rows)]))


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_counting_groups_gives_as_many_as_lifting(value_type, data):
    """The mapper decides from count_groups whether to pre-aggregate: it must count what lift would group."""
    plan = plan_for(value_type)
    rows = table_of(plan, data.draw(rows_of(value_type), label="rows"))
    assert plan.count_groups(rows) == plan.lift(rows).num_rows


def test_counting_groups_counts_only_the_rows_the_filter_keeps():
    rows = pa.table({"k": ["a", "a", "b", "c"], "v": pa.array([5, 1, -1, 0], pa.int64())})

    def groups(condition: str) -> int:
        return Job(name="t", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "int64"}), filter=condition,
                   keys={"k": "k"}, aggregates={"n": "count()"}).plan.count_groups(rows)

    assert (groups("v > 0"), groups("v >= 0"), groups("v > 9")) == (1, 2, 0)


def test_merge_never_modifies_its_inputs():
    plan = plan_for("int64")
    a, b = lifted(plan, [("a", 1), ("b", None)]), lifted(plan, [("a", 2)])
    before = (a.to_pylist(), b.to_pylist())
    plan.merge([a, b])
    assert (a.to_pylist(), b.to_pylist()) == before


# --- lift + finalize against a plain-Python recomputation ------------------------------------------------


def recompute(rows: list[tuple], value_type: str) -> dict:
    """The SQL answer, by hand: nulls are skipped; SUM/MIN/MAX/AVG of no values is NULL, COUNT of none is 0."""
    groups: dict = defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    answer = {}
    for key, values in groups.items():
        present = [v for v in values if v is not None]
        total = (math.fsum(present) if value_type == "float64" else sum(present)) if present else None
        answer[key] = {
            "rows": len(values),
            "present": len(present),
            "total": total,
            "low": min(present) if present else None,
            "high": max(present) if present else None,
            "average": float(total) / len(present) if present else None,
            "spread": statistics.stdev(present) if len(present) > 1 else None,
            "variance": statistics.pvariance(present) if present else None,
            # Below their compaction thresholds the sketches are exact: tens of values are.
            "distinct": len(set(present)),
            "median": float(sorted(present)[math.ceil(0.5 * len(present)) - 1]) if present else None,
            "top": _top(present, value_type, 3),
        }
    return answer


def _top(values: list, value_type: str, k: int) -> list[dict]:
    """The k most frequent values as their Arrow text, ties to the smaller text."""
    texts = pa.array(values, plan_for(value_type).input_schema.field("v").type).cast(pa.string()).to_pylist()
    counts: dict = defaultdict(int)
    for text in texts:
        counts[text] += 1
    return [{"value": v, "count": c} for v, c in sorted(counts.items(), key=lambda i: (-i[1], i[0]))[:k]]


def assert_matches_recomputation(result: pa.Table, rows: list[tuple], value_type: str) -> None:
    got = {row.pop("k"): row for row in result.to_pylist()}
    want = recompute(rows, value_type)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        actual = got[key]
        assert actual["rows"] == expected["rows"], key
        assert actual["present"] == expected["present"], key
        assert actual["low"] == expected["low"] and actual["high"] == expected["high"], key
        assert _same_value(actual["total"], expected["total"], value_type == "float64"), (key, actual, expected)
        assert _same_value(actual["average"], expected["average"], True), (key, actual, expected)
        assert (actual["average"] is None) == (expected["average"] is None), key
        for name in ("spread", "variance"):
            assert (actual[name] is None) == (expected[name] is None), (key, name, actual, expected)
            if expected[name] is not None:
                # Exact moments for int and decimal; float sums of squares lose digits to cancellation, so
                # floats are held to the bound moments.py documents: relative to the mean square.
                scale = math.fsum(float(v) ** 2 for v in rows_of_key(rows, key)) / expected["rows"]
                tolerance = 1e-9 if value_type != "float64" else 1e-12 * max(scale, 1.0)
                assert math.isclose(actual[name] ** (2 if name == "spread" else 1),
                                    float(expected[name]) ** (2 if name == "spread" else 1),
                                    rel_tol=1e-9, abs_tol=tolerance), (key, name, actual, expected)
        assert actual["distinct"] == expected["distinct"], key
        # Quantiles are of the values as float64 (Arrow's decimal cast may be off by an ulp).
        assert _same_value(actual["median"], expected["median"], True), key
        assert actual["top"] == expected["top"], key


def rows_of_key(rows: list[tuple], key) -> list:
    return [v for k, v in rows if k == key and v is not None]


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_lift_then_finalize_is_the_sql_answer(value_type, data):
    plan = plan_for(value_type)
    rows = data.draw(rows_of(value_type, max_size=60), label="rows")
    assert_matches_recomputation(plan.finalize(plan.lift(table_of(plan, rows))), rows, value_type)


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_any_split_of_the_rows_finalizes_to_the_sql_answer(value_type, data):
    plan = plan_for(value_type)
    rows = data.draw(rows_of(value_type, max_size=60), label="rows")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=5), label="cuts"))
    pieces = [rows[i:j] for i, j in zip([0, *cuts], [*cuts, len(rows)])]
    partial = plan.empty()
    for piece in reversed(pieces):  # the order partials arrive in must not matter either
        partial = plan.merge([lifted(plan, piece), partial])
    assert_matches_recomputation(plan.finalize(partial), rows, value_type)


def test_sql_null_semantics_given_these_rows():
    plan = plan_for("decimal(18,6)")
    rows = [("a", Decimal("1.5")), ("a", None), ("b", None), ("b", None), (None, Decimal("2"))]
    result = plan.finalize(plan.lift(table_of(plan, rows))).sort_by("k").to_pylist()
    assert result == [
        {"k": "a", "rows": 2, "present": 1, "total": Decimal("1.5"), "low": Decimal("1.5"),
         "high": Decimal("1.5"), "average": 1.5, "spread": None, "variance": 0.0, "distinct": 1, "median": 1.5,
         "top": [{"value": "1.500000", "count": 1}]},
        {"k": "b", "rows": 2, "present": 0, "total": None, "low": None, "high": None, "average": None,
         "spread": None, "variance": None, "distinct": 0, "median": None, "top": []},
        {"k": None, "rows": 1, "present": 1, "total": Decimal("2"), "low": Decimal("2"), "high": Decimal("2"),
         "average": 2.0, "spread": None, "variance": 0.0, "distinct": 1, "median": 2.0,
         "top": [{"value": "2.000000", "count": 1}]},
    ]


def test_a_group_of_only_nulls_stays_null_after_merging_with_values_elsewhere():
    plan = plan_for("int64")
    merged = plan.merge([lifted(plan, [("a", None)]), lifted(plan, [("b", 7)]), lifted(plan, [("a", None)])])
    result = {row["k"]: row for row in plan.finalize(merged).to_pylist()}
    assert result["a"] == {"k": "a", "rows": 2, "present": 0, "total": None, "low": None, "high": None,
                           "average": None, "spread": None, "variance": None, "distinct": 0, "median": None,
                           "top": []}
    assert result["b"]["total"] == 7


def test_mean_of_merged_partials_weighs_every_value_not_every_partial():
    plan = plan_for("int64")
    merged = plan.merge([lifted(plan, [("a", 1), ("a", 2), ("a", 3)]), lifted(plan, [("a", 10)])])
    assert plan.finalize(merged).column("average").to_pylist() == [4.0]  # not (2 + 10) / 2


def test_decimal_sums_are_exact_beyond_the_input_precision():
    plan = plan_for("decimal(18,6)")
    tenth = [("a", Decimal("0.1"))] * 10
    biggest = [("b", Decimal("999999999999.999999"))] * 3
    partials = [lifted(plan, tenth[:4]), lifted(plan, tenth[4:]), lifted(plan, biggest[:1]), lifted(plan, biggest[1:])]
    totals = dict(zip(*plan.finalize(plan.merge(partials)).select(["k", "total"]).to_pydict().values()))
    assert totals == {"a": Decimal("1.000000"), "b": Decimal("2999999999999.999997")}


def test_a_filter_drops_rows_before_they_are_counted():
    job = Job(name="t", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "int64"}),
              filter="v > 0", keys={"k": "k"}, aggregates={"n": "count()", "s": "sum(v)"})
    rows = pa.table({"k": ["a", "a", "a", "b"], "v": pa.array([5, -1, None, 0], pa.int64())})
    assert job.plan.finalize(job.plan.lift(rows)).to_pylist() == [{"k": "a", "n": 1, "s": 5}]


# --- refusing partials of another shape ------------------------------------------------------------------


def test_merging_a_partial_of_another_schema_raises_partial_mismatch():
    plan = plan_for("int64")
    foreign = lifted(plan_for("decimal(18,6)"), [("a", Decimal("1"))])
    with pytest.raises(PartialMismatch):
        plan.merge([lifted(plan, [("a", 1)]), foreign])


def test_merging_a_partial_with_a_renamed_state_raises_partial_mismatch():
    plan = plan_for("int64")
    partial = lifted(plan, [("a", 1)])
    renamed = partial.rename_columns(["renamed" if name == "total" else name for name in partial.column_names])
    with pytest.raises(PartialMismatch):
        plan.merge([partial, renamed])


def test_the_fingerprint_identifies_the_definition():
    assert plan_for("int64").fingerprint == Job(
        name="other-name", prefix="q/", format=CsvFormat(columns={"k": "string", "v": "int64"}),
        keys={"k": "k"}, aggregates=AGGREGATES,
    ).plan.fingerprint
    assert len({plan_for(t).fingerprint for t in VALUE_TYPES}) == len(VALUE_TYPES)


# --- the codec -------------------------------------------------------------------------------------------

META = {"rows": 3, "source": "s3://tally-input/uservisits/part-00000.csv", "etag": "9b2cf535f27731c974343645a3985328"}


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_codec_round_trip_preserves_the_partial_and_its_meta(value_type, compression, data):
    plan = plan_for(value_type)
    partial = lifted(plan, data.draw(rows_of(value_type), label="rows"))
    table, meta = decode(encode(partial, plan.fingerprint, META, compression), plan.fingerprint)
    assert table.equals(partial)
    assert table.schema.equals(plan.state_schema, check_metadata=True)  # codec tags do not leak out
    assert meta == META


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
@pytest.mark.parametrize("value_type", VALUE_TYPES)
@LAWS
@given(data=st.data())
def test_codec_round_trip_of_long_partials_stated_by_row(value_type, compression, data):
    """Row-stated partials of hundreds of rows: their counts are long runs (run-end encoded on the wire), their
    values and keys are not; decoding gives back the very table."""
    plan = row_plan_for(value_type)
    rows = data.draw(rows_of(value_type, max_size=400), label="rows") * 2
    partial = plan.lift_rows(table_of(plan, rows)) if rows else plan.empty()
    table, meta = decode(encode(partial, plan.fingerprint, META, compression), plan.fingerprint)
    assert table.equals(partial) and table.schema.equals(plan.state_schema, check_metadata=True)


def test_the_counts_of_a_partial_stated_by_row_travel_run_end_encoded():
    plan = row_plan_for("int64")
    partial = plan.lift_rows(table_of(plan, [(f"k{i}", i) for i in range(1000)]))
    wire = pa.ipc.open_stream(pa.py_buffer(encode(partial, plan.fingerprint))).schema
    encoded = {field.name for field in wire if pa.types.is_run_end_encoded(field.type)}
    assert {"rows", "present", "total.n", "__rows"} <= encoded  # all ones
    assert not encoded & {"k", "low", "high"}  # a thousand distinct values
    assert decode(encode(partial, plan.fingerprint), plan.fingerprint)[0].equals(partial)


def test_partials_written_by_codec_version_1_still_decode():
    """Version 1 wrote every column plain: partials kept from before run-end encoding are read as they were."""
    plan = plan_for("int64")
    partial = lifted(plan, [("a", 1), ("b", 2)])
    tagged = partial.replace_schema_metadata({b"tally.partial": b"1", b"tally.fingerprint": plan.fingerprint,
                                              b"tally.meta": b"{}"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tagged.schema) as writer:
        writer.write_table(tagged)
    assert decode(sink.getvalue().to_pybytes(), plan.fingerprint)[0].equals(partial)


def test_codec_round_trip_of_the_empty_partial_without_meta():
    plan = plan_for("float64")
    table, meta = decode(encode(plan.empty(), plan.fingerprint), plan.fingerprint)
    assert table.equals(plan.empty()) and table.num_rows == 0
    assert meta == {}


def test_decoding_with_another_fingerprint_raises_partial_mismatch_naming_both():
    written_by, read_by = plan_for("int64"), plan_for("float64")
    data = encode(lifted(written_by, [("a", 1)]), written_by.fingerprint, META)
    with pytest.raises(PartialMismatch) as caught:
        decode(data, read_by.fingerprint)
    assert written_by.fingerprint in str(caught.value) and read_by.fingerprint in str(caught.value)


def _plain_arrow_stream() -> bytes:
    """Valid Arrow IPC, but not written by the codec: no magic, no version, no fingerprint."""
    table = lifted(plan_for("int64"), [("a", 1)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _truncated_partial() -> bytes:
    plan = plan_for("int64")
    data = encode(lifted(plan, [("a", 1), ("b", 2)]), plan.fingerprint, META)
    return data[: len(data) // 2]


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not a partial at all", id="text"),
    pytest.param(b"\x80\x00\x00\x00", id="short-length-prefix"),
    pytest.param(_truncated_partial(), id="truncated"),
    pytest.param(_plain_arrow_stream(), id="arrow-without-tally-tags"),
])
def test_decoding_garbage_raises_partial_mismatch(data):
    plan = plan_for("int64")
    with pytest.raises(PartialMismatch):
        decode(data, plan.fingerprint)


# Arrow reports some malformed streams as ArrowIOError (an OSError): decode must still call them PartialMismatch.
@pytest.mark.parametrize("data", [
    pytest.param(b"\xf0\xf0\xf0\xf0", id="negative-continuation-token"),
    pytest.param(b"\xff" * 8, id="negative-metadata-length"),
])
def test_decoding_garbage_arrow_reads_as_io_error_raises_partial_mismatch(data):
    with pytest.raises(PartialMismatch):
        decode(data, plan_for("int64").fingerprint)


def _int_job(**overrides) -> Job:
    definition = dict(name="ints", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "int64"}),
                      keys={"k": "k"}, aggregates={"total": "sum(v)", "average": "mean(v)"})
    return Job(**{**definition, **overrides})


def test_integer_sums_do_not_overflow_and_means_of_huge_integers_finalize():
    plan = _int_job().plan
    half = pa.table({"k": ["a", "a"], "v": pa.array([2**62, 2**62], pa.int64())})
    merged = plan.merge([plan.lift(half), plan.lift(half)])
    final = plan.finalize(merged).to_pylist()
    assert final == [{"k": "a", "total": Decimal(2**64), "average": float(2**62)}]


def test_a_key_named_like_an_arrow_output_column_still_merges():
    plan = _int_job(keys={"total_sum": "k"}).plan
    rows = pa.table({"k": ["a", "b", "a"], "v": pa.array([1, 2, 3], pa.int64())})
    merged = plan.merge([plan.lift(rows), plan.lift(rows)])
    assert sorted(plan.finalize(merged).to_pylist(), key=lambda r: r["total_sum"]) == [
        {"total_sum": "a", "total": Decimal(8), "average": 2.0},
        {"total_sum": "b", "total": Decimal(4), "average": 2.0},
    ]


# --- retraction: a deleted or overwritten object's contribution comes out exactly --------------------------

ADDITIVE = {"rows": "count()", "present": "count(v)", "total": "sum(v)", "average": "mean(v)",
            "spread": "stddev_samp(v)"}


def additive_plan(value_type: str) -> AggregationPlan:
    return Job(name="t", prefix="p/", format=CsvFormat(columns={"k": "string", "v": value_type}),
               keys={"k": "k"}, aggregates=ADDITIVE).plan


@LAWS
@given(st.data())
def test_retracting_a_contribution_gives_the_result_without_it(data):
    value_type = data.draw(st.sampled_from(["int64", "decimal(18,6)"]), label="type")
    plan = additive_plan(value_type)
    kept, removed = data.draw(rows_of(value_type), label="kept"), data.draw(rows_of(value_type), label="removed")
    together = plan.merge([lifted(plan, kept), lifted(plan, removed)])

    assert_same_partial(plan, plan.retract(together, [lifted(plan, removed)]), lifted(plan, kept))
    final = plan.finalize(plan.retract(together, [lifted(plan, removed)]))
    assert final.sort_by("k").to_pylist() == plan.finalize(lifted(plan, kept)).sort_by("k").to_pylist()


@pytest.mark.parametrize("aggregate", ["min(v)", "max(v)", "approx_distinct(v)", "approx_quantile(v, 0.9)",
                                       "top_k(v, 2)"])
def test_min_max_and_sketches_refuse_retraction(aggregate):
    plan = Job(name="t", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "int64"}),
               keys={"k": "k"}, aggregates={"a": aggregate, "n": "count()"}).plan
    assert not plan.subtractable
    with pytest.raises(PartialMismatch):
        plan.retract(plan.empty(), [plan.empty()])


# --- float sums: inf, -inf and NaN come and go exactly, finite values within the documented bound ---------------

# Outputs named after the DuckDB function each one is held to.
FLOAT_AGGREGATES = {function: f"{function}(v)" for function in float_referee.FUNCTIONS}
FINITE = st.floats(min_value=-1e150, max_value=1e150)  # subnormals to huge: the range moments.py's bound covers
FLOAT_VALUES = st.one_of(FINITE, st.floats(min_value=-1e3, max_value=1e3), FINITE,
                         st.sampled_from([math.inf, -math.inf, math.nan]), st.none())


@cache
def float_plan() -> AggregationPlan:
    return Job(name="f", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "float64"}), keys={"k": "k"},
               aggregates=FLOAT_AGGREGATES).plan


def float_rows(max_size: int = 30) -> st.SearchStrategy[list[tuple]]:
    return st.lists(st.tuples(KEYS, FLOAT_VALUES), max_size=max_size)


def float_table(rows: list[tuple]) -> pa.Table:
    keys, values = zip(*rows) if rows else ((), ())
    return pa.table({"k": pa.array(keys, pa.string()), "v": pa.array(values, pa.float64())})


def lifted_float(plan: AggregationPlan, rows: list[tuple]) -> pa.Table:
    return plan.lift(float_table(rows))


def by_group(rows: list[tuple]) -> dict:
    """Each group's non-null values, in row order."""
    groups: dict = defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    return {key: [v for v in values if v is not None] for key, values in groups.items()}


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def answers(plan: AggregationPlan, partial: pa.Table) -> dict:
    return {row.pop("k"): row for row in plan.finalize(partial).to_pylist()}


@LAWS
@given(data=st.data())
def test_retracting_a_float_contribution_gives_the_result_without_it(data):
    """finalize(retract(merge(a, b), [b])) is finalize(a): NULL, NaN and the infinities exactly, and every
    non-finite count as it was; finite answers within the bound over all the values the sums took in."""
    plan = float_plan()
    kept, removed = data.draw(float_rows(), label="kept"), data.draw(float_rows(), label="removed")
    retracted = plan.retract(plan.merge([lifted_float(plan, kept), lifted_float(plan, removed)]),
                             [lifted_float(plan, removed)])

    counts = [f.name for f in plan.state_schema if pa.types.is_integer(f.type)]
    order = [(name, "ascending") for name in plan.key_names]
    assert retracted.select(["k", *counts]).sort_by(order).equals(lifted_float(plan, kept).select(["k", *counts])
                                                                  .sort_by(order))
    got, holds, dropped = answers(plan, retracted), by_group(kept), by_group(removed)
    assert got.keys() == holds.keys()
    for key, values in holds.items():
        taken_in = finite(values) + 2 * finite(dropped.get(key, []))
        for function in float_referee.FUNCTIONS:
            float_referee.assert_answer(function, got[key][function], values, taken_in)


@LAWS
@given(data=st.data())
def test_a_float_fold_finalizes_to_duckdbs_answer(data):
    """finalize(fold(xs)) over any split of xs is what DuckDB answers over xs: NULL, NaN and the infinities
    exactly (the one documented exception aside); a finite answer within the bound of the exact one, and DuckDB's
    within twice that (it rounds in another order)."""
    plan = float_plan()
    rows = data.draw(float_rows(max_size=60), label="rows")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=4), label="cuts"))
    pieces = [float_table(rows[i:j]) for i, j in zip([0, *cuts], [*cuts, len(rows)]) if j > i]
    # Every other piece stated row by row, as the mapper states nearly distinct keys; the first is aggregated,
    # since a merge aggregates only what it combines.
    partial = plan.merge([plan.lift_rows(p) if n % 2 else plan.lift(p) for n, p in enumerate(pieces)])

    ours, duckdbs = answers(plan, partial), duckdb_answers(rows)
    assert ours.keys() == duckdbs.keys()
    for key, values in by_group(rows).items():
        for function in float_referee.FUNCTIONS:
            got, want = ours[key][function], duckdbs[key][function]
            float_referee.assert_answer(function, got, values, finite(values))
            if function.endswith("_pop") and len(values) == 1 and not math.isfinite(values[0]):
                assert math.isnan(got) and want == 0.0, (function, values)  # see moments.py
            elif got is not None and math.isfinite(got):
                assert float_referee.within(function, want, values, values, times=2), (function, got, want, values)
            else:
                float_referee.assert_same_float(got, want, (function, got, want, values))


def duckdb_answers(rows: list[tuple]) -> dict:
    table = float_table(rows)
    selected = ", ".join(f"{function}(v) AS {function}" for function in float_referee.FUNCTIONS)
    with duckdb.connect() as con:
        con.register("t", table)
        result = con.sql(f"SELECT k, {selected} FROM t GROUP BY k").to_arrow_table()
    return {row.pop("k"): row for row in result.to_pylist()}


@pytest.mark.parametrize("values, expected", [
    # sum, avg, var_samp, var_pop, stddev_samp, stddev_pop: as DuckDB answers over the same values
    ([1.0, math.inf], (math.inf, math.inf, math.nan, math.nan, math.nan, math.nan)),
    ([-math.inf, 2.0, None], (-math.inf, -math.inf, math.nan, math.nan, math.nan, math.nan)),
    ([math.inf, math.inf], (math.inf, math.inf, math.nan, math.nan, math.nan, math.nan)),
    ([math.inf, -math.inf], (math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)),
    ([1.0, math.nan, math.inf], (math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)),
    ([math.inf], (math.inf, math.inf, None, math.nan, None, math.nan)),  # DuckDB: var_pop 0.0, see moments.py
    ([None], (None, None, None, None, None, None)),
    ([1.0, 2.0, 4.0], (7.0, 7 / 3, 7 / 3, 14 / 9, math.sqrt(7 / 3), math.sqrt(14 / 9))),
])
def test_float_aggregates_answer_over_non_finite_values_as_sql_does(values, expected):
    plan = float_plan()
    got = answers(plan, lifted_float(plan, [("a", v) for v in values]))["a"]
    for function, want in zip(float_referee.FUNCTIONS, expected):
        if want is not None and math.isfinite(want):
            assert got[function] == pytest.approx(want, rel=1e-15), function
        else:
            float_referee.assert_same_float(got[function], want, function)


def test_a_population_variance_of_one_non_finite_value_is_nan_where_duckdb_says_zero():
    """The one place Tally parts from DuckDB (moments.py): a NaN or infinite input never reads as variance 0."""
    plan = float_plan()
    for value in (math.inf, -math.inf, math.nan):
        ours, duckdbs = answers(plan, lifted_float(plan, [("a", value)]))["a"], duckdb_answers([("a", value)])["a"]
        assert math.isnan(ours["var_pop"]) and math.isnan(ours["stddev_pop"])
        assert duckdbs["var_pop"] == 0.0 and duckdbs["stddev_pop"] == 0.0


def test_retracting_a_huge_value_takes_the_small_ones_rounded_away_against_it_along():
    """The documented bound, not exactness: 1e300 + 1.0 keeps no trace of the 1.0, so retracting 1e300 leaves 0.0,
    as DuckDB's SUM over 1e300, 1.0, -1e300 does."""
    plan = float_plan()
    huge, one = lifted_float(plan, [("a", 1e300)]), lifted_float(plan, [("a", 1.0)])
    total = answers(plan, plan.retract(plan.merge([huge, one]), [huge]))["a"]["sum"]
    assert total == 0.0 and float_referee.within("sum", total, [1.0], [1e300, 1.0, -1e300])
    assert duckdb_answers([("a", 1e300), ("a", 1.0), ("a", -1e300)])["a"]["sum"] == 0.0


def test_integer_and_decimal_states_keep_their_shape_and_float_states_their_own_fingerprint():
    """Kept results and partials of integer and decimal jobs still decode and merge: their fingerprints are what
    they were before float sums counted non-finite values. Float jobs' are not, so a kept float result (without
    the counts) is started over rather than merged into a wrong number."""
    assert (plan_for("int64").fingerprint, additive_plan("int64").fingerprint) == (
        "1c46f84c5ec2e0bf", "bdc6b782bcaf7ed7")
    assert (plan_for("decimal(18,6)").fingerprint, additive_plan("decimal(18,6)").fingerprint) == (
        "1a28a018a14d61ab", "ba55698a8a8394e6")
    assert "n_" not in "".join(plan_for("int64").state_schema.names + plan_for("decimal(18,6)").state_schema.names)
    assert plan_for("float64").fingerprint != "5fd45e7e7264df50"
    assert additive_plan("float64").fingerprint != "fa73f7ec6ec2161e"
