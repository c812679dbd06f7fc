"""Sketches against exact answers on generated data, within the error bounds sketches.py documents, and
variance/stddev against DuckDB's stddev_samp / var_pop."""
from __future__ import annotations

import math
from decimal import Decimal

import datasketches as ds
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from chalicelib.jobs import CsvFormat, Job


def plan(aggregates: dict, value_type: str = "int64"):
    return Job(name="t", prefix="p/", format=CsvFormat(columns={"k": "string", "v": value_type}),
               keys={"k": "k"}, aggregates=aggregates).plan


def fold(p, table: pa.Table, pieces: int) -> pa.Table:
    """Lift in pieces and merge, as mappers and the reducer do."""
    step = math.ceil(table.num_rows / pieces)
    return p.finalize(p.merge([p.lift(table.slice(i, step)) for i in range(0, table.num_rows, step)]))


def test_approx_distinct_of_a_million_distinct_values_is_within_three_standard_errors():
    p = plan({"visitors": "approx_distinct(v)"})
    values = np.random.default_rng(7).permutation(1_000_000).astype(np.int64) * 7919
    table = pa.table({"k": pa.array(["all"] * len(values)), "v": values})
    [row] = fold(p, table, 8).to_pylist()
    bound = 3 * 1.04 / math.sqrt(2 ** 12)  # 3 relative standard errors at lg_k 12: 4.9 %
    assert abs(row["visitors"] - 1_000_000) <= bound * 1_000_000, row


def test_approx_distinct_counts_repeats_once_per_group():
    p = plan({"visitors": "approx_distinct(v)"})
    table = pa.table({"k": ["a"] * 1000 + ["b"] * 10, "v": pa.array([i % 100 for i in range(1000)] + [5] * 10)})
    assert sorted((r["k"], r["visitors"]) for r in fold(p, table, 3).to_pylist()) == [("a", 100), ("b", 1)]


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_approx_quantile_rank_is_within_the_kll_bound(q):
    p = plan({"p": f"approx_quantile(v, {q})"}, "float64")
    values = np.random.default_rng(11).lognormal(3, 1, 500_000)
    [row] = fold(p, pa.table({"k": pa.array(["all"] * len(values)), "v": values}), 10).to_pylist()
    rank = np.searchsorted(np.sort(values), row["p"], side="right") / len(values)
    epsilon = ds.kll_doubles_sketch.get_normalized_rank_error(200, False)  # 1.33 %, at 99 % confidence
    assert abs(rank - q) <= epsilon, (rank, q, epsilon)


def test_top_k_finds_the_most_frequent_values_with_counts_within_the_bound():
    # Zipf: a long tail of 20,000 distinct values, far more than the sketch keeps (768 at lg_max_k 10).
    rng = np.random.default_rng(3)
    values = np.minimum(rng.zipf(1.3, 400_000), 20_000).astype(str)
    p = plan({"top": "top_k(v, 5)"}, "string")
    [row] = fold(p, pa.table({"k": pa.array(["all"] * len(values)), "v": values}), 4).to_pylist()
    words, counts = np.unique(values, return_counts=True)
    exact = dict(zip(words.tolist(), counts.tolist()))
    expected = sorted(exact, key=lambda w: -exact[w])[:5]
    assert [item["value"] for item in row["top"]] == expected
    epsilon = 3.5 / (0.75 * 2 ** 10)
    for item in row["top"]:
        assert abs(item["count"] - exact[item["value"]]) <= epsilon * len(values), item


def test_top_k_is_exact_while_the_values_fit_and_breaks_ties_by_value():
    p = plan({"top": "top_k(v, 3)"}, "string")
    table = pa.table({"k": ["a"] * 7, "v": ["x", "y", "z", "y", "x", None, "w"]})
    assert fold(p, table, 3).column("top").to_pylist() == [
        [{"value": "x", "count": 2}, {"value": "y", "count": 2}, {"value": "w", "count": 1}]]


@pytest.mark.parametrize("value_type, values", [
    ("decimal(18,6)", [Decimal(f"{v}.{v * 7 % 1000000:06d}") for v in range(1, 2000)] + [None]),
    ("int64", [10**12 + v * v for v in range(500)] + [None]),
    ("float64", list(np.random.default_rng(5).normal(100, 15, 3000)) + [None]),
])
def test_stddev_and_variance_match_duckdb(value_type, values):
    p = plan({"sd": "stddev_samp(v)", "var": "var_pop(v)", "sd1": "stddev(v)"}, value_type)
    keys = [f"g{i % 3}" for i in range(len(values))] + ["single", "nulls"]
    table = pa.table({"k": keys, "v": pa.array(values + [values[0], None], p.input_schema.field("v").type)})
    got = {r["k"]: r for r in fold(p, table, 5).to_pylist()}
    con = duckdb.connect()
    con.register("t", table)
    want = {k: (sd, var) for k, sd, var in con.execute("SELECT k, stddev_samp(v), var_pop(v) FROM t GROUP BY k").fetchall()}
    assert got.keys() == want.keys()
    for key, (sd, var) in want.items():
        assert (got[key]["sd"] is None) == (sd is None) and (got[key]["var"] is None) == (var is None), key
        if sd is not None:
            assert math.isclose(got[key]["sd"], sd, rel_tol=1e-9) and got[key]["sd1"] == got[key]["sd"], key
        if var is not None:
            assert math.isclose(got[key]["var"], var, rel_tol=1e-9, abs_tol=1e-12), key
    assert got["single"]["sd"] is None and got["single"]["var"] == 0.0  # SQL: sample stddev needs 2 values


@pytest.mark.parametrize("aggregate, problem", [
    ("approx_quantile(v)", "takes the quantile q"),
    ("approx_quantile(v, 1.5)", "from 0 to 1"),
    ("approx_quantile(v, k)", "the expression 'k'"),
    ("top_k(v, 2000)", "an integer from 1 to 1000"),
    ("top_k(v, 100, 5)", "raise lg_max_k"),
    ("approx_distinct(v, 30)", "lg_k"),
    ("stddev(k)", "needs numbers"),
    ("approx_quantile(k, 0.5)", "needs numbers"),
    ("sum(v, 2)", "takes exactly one expression"),
])
def test_bad_sketch_parameters_fail_at_load_time_naming_the_problem(aggregate, problem):
    with pytest.raises(ValueError) as caught:
        plan({"a": aggregate})
    assert problem in str(caught.value)
