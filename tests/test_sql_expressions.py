"""SQL expressions as jobs write them, compiled to Arrow: every construct gives what DuckDB gives for the same
text over the same rows, NULLs included; a hypothesis property does the same for generated conditions."""
from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.errors import JobDefinitionError
from chalicelib.sql.expressions import compile_sql_expression

ROWS = pa.table({
    "id": pa.array(range(7), pa.int64()),
    "i": pa.array([1, -7, 0, None, 12, 5, -3], pa.int64()),
    "j": pa.array([2, 3, None, 4, -5, 5, 0], pa.int64()),
    "f": pa.array([1.5, -2.5, 0.0, None, math.nan, 2.5, -0.125], pa.float64()),
    "d": pa.array([Decimal("1.250000"), Decimal("-2.5"), None, Decimal("0"), Decimal("10.125"), Decimal("3"),
                   Decimal("-0.5")], pa.decimal128(18, 6)),
    "s": pa.array(["Abc", "a_c", "a%c", None, "  pad ", "héllo", "x\\y"], pa.string()),
    "t": pa.array(["abc", None, "A%C", "z", "pad", "HÉLLO", "q"], pa.string()),
    "ts": pa.array([dt.datetime(2024, 3, 31, 23, 59, 59), dt.datetime(2001, 2, 3, 4, 5, 6, 500000), None,
                    dt.datetime(1969, 12, 31, 12, 0), dt.datetime(2000, 1, 3), dt.datetime(2024, 1, 1, 0, 7, 30),
                    dt.datetime(2021, 6, 15, 8, 30, 0, 1)], pa.timestamp("us")),
    "day": pa.array([dt.date(2024, 3, 31), dt.date(2001, 2, 3), dt.date(1999, 12, 31), None, dt.date(2000, 1, 1),
                     dt.date(1970, 1, 1), dt.date(2024, 2, 29)], pa.date32()),
    "b": pa.array([True, False, None, True, None, False, True], pa.bool_()),
})


def tally(expression: str, rows: pa.Table = ROWS) -> list:
    return compile_sql_expression(expression, rows.schema).evaluate_array(rows).to_pylist()


def duck(expression: str, rows: pa.Table = ROWS) -> list:
    connection = duckdb.connect()
    connection.register("rows", rows)
    return [row[0] for row in connection.execute(f"SELECT {expression} FROM rows ORDER BY id").fetchall()]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)) and not isinstance(a, bool):
        return float(a) == float(b) if isinstance(a, float) or isinstance(b, float) else a == b
    return a == b and type(a) is type(b) or (a is None and b is None)


def assert_like_duckdb(expression: str, rows: pa.Table = ROWS) -> None:
    got, want = tally(expression, rows), duck(expression, rows)
    assert len(got) == len(want) and all(same(g, w) for g, w in zip(got, want)), (expression, got, want)


@pytest.mark.parametrize("expression", [
    # arithmetic: / is a DOUBLE, // and % truncate towards zero, decimal literals stay exact
    "i + j", "i - j * 2", "i / j", "i / 0", "f / 0", "i // 3", "i % 3", "-i % 3", "f % 2", "-i",
    "d * 1.5", "d + i", "d / 2", "f * 2 + i", "1 + 1.5", "i * 1e3",
    # comparisons and three-valued logic
    "i < j", "i = j", "i <> j", "i != j", "f >= 0", "d > 1.25", "s = t", "i > 0 AND j > 0", "i > 0 OR j > 0",
    "NOT (i > 0)", "b AND i > 0", "b OR NULL", "NOT b", "i IS NULL", "i IS NOT NULL", "b IS TRUE",
    "b IS FALSE", "i IS DISTINCT FROM j", "i IS NOT DISTINCT FROM j",
    # IN, BETWEEN
    "i IN (1, 12, 99)", "i IN (1, NULL)", "i NOT IN (1, NULL)", "i NOT IN (1, 5)", "s IN ('Abc', 'z')",
    "i IN (j, 1)", "i IN (NULL)", "f IN (1.5, 2)", "i IN (1.5, 12)", "d IN (1, 3)", "i BETWEEN -3 AND 5", "i NOT BETWEEN 0 AND 12", "d BETWEEN 0 AND 3",
    # LIKE: % and _, no escape character unless ESCAPE names one
    "s LIKE 'a%'", "s LIKE 'a_c'", "s LIKE '%\\%'", "s LIKE 'x\\y'", "s NOT LIKE '%c'",
    "s LIKE 'a!%c' ESCAPE '!'", "s ILIKE 'abc'", "t ILIKE 'a%c'", "s ILIKE 'HÉ%'",
    # CASE: a NULL condition does not hold
    "CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'zero or null' END",
    "CASE WHEN b THEN i END", "CASE i WHEN 1 THEN 'one' WHEN 12 THEN 'twelve' ELSE 'other' END",
    "CASE WHEN i > 0 THEN f ELSE i END", "if(b, 'yes', 'no')",
    # casts, to the project's types, with DuckDB's rounding
    "CAST(d::DOUBLE AS BIGINT)", "CAST(d AS INTEGER)", "CAST(i AS VARCHAR)", "CAST(d AS VARCHAR)", "CAST(i AS DOUBLE)",
    "CAST(d AS DECIMAL(18, 2))", "CAST(ts AS DATE)", "CAST(day AS TIMESTAMP)", "CAST(ts AS VARCHAR)",
    "CAST(day AS VARCHAR)", "CAST(b AS VARCHAR)", "CAST(i AS DECIMAL(10, 2))", "i::BIGINT + 1",
    "CAST('12' AS BIGINT) + i", "DATE '2001-02-03' < day", "TIMESTAMP '2001-02-03 04:05:06' <= ts",
    # NULL handling
    "coalesce(i, j, 0)", "coalesce(s, t, '?')", "ifnull(i, -1)", "nullif(i, 1)", "coalesce(f, i)",
    # text
    "substr(s, 1, 2)", "substring(s, 2)", "substring(s, 0, 2)", "substring(s, -2)", "substring(s, -4, 2)",
    "substring(s FROM 2 FOR 3)", "lower(t)", "upper(s)", "length(s)", "concat(s, '-', i)", "concat(s, t)",
    "s || t", "s || i", "trim(s)", "ltrim(s)", "rtrim(s)", "replace(s, 'a', 'A')", "starts_with(s, 'a')",
    "ends_with(s, 'c')", "contains(s, 'l')", "regexp_matches(s, '^[a-z]_')",
    # numbers
    "abs(i)", "round(f)", "round(d, 1)", "round(f, 1)", "floor(f)", "ceil(d)",
    # time: extract, date_part, the part functions, date_trunc (a TIMESTAMP), time_bucket (DuckDB's origins)
    "extract(year FROM ts)", "extract(month FROM day)", "extract(dow FROM day)", "extract(isodow FROM ts)",
    "extract(doy FROM day)", "extract(week FROM ts)", "extract(quarter FROM ts)", "extract(hour FROM ts)",
    "extract(minute FROM ts)", "extract(second FROM ts)", "date_part('day', day)", "year(day)", "month(ts)",
    "day(ts)", "hour(ts)", "minute(ts)", "second(ts)", "dayofweek(day)", "dayofyear(ts)",
    "date_trunc('day', ts)", "date_trunc('month', day)", "date_trunc('week', ts)", "date_trunc('year', ts)",
    "date_trunc('hour', ts)", "date_trunc('quarter', day)", "date_trunc('minute', ts)",
    "time_bucket(INTERVAL '15 minutes', ts)", "time_bucket(INTERVAL 2 DAY, ts)", "time_bucket(INTERVAL '1 week', day)",
    "time_bucket(INTERVAL '2 months', day)", "time_bucket(INTERVAL '3 months', ts)", "time_bucket(INTERVAL '1 year', ts)",
    "time_bucket(INTERVAL '90 seconds', ts)", "time_bucket(INTERVAL '2 days', ts, TIMESTAMP '1970-01-01')",
    "time_bucket(INTERVAL '1 day', day)", "time_bucket(INTERVAL '36 hours', day)",
    # text literals take the other side's type
    "ts >= '2001-02-03'", "day = '2024-03-31'", "i = '12'", "d < '2'",
])
def test_each_construct_computes_what_duckdb_computes(expression):
    assert_like_duckdb(expression)


def test_an_expression_reads_only_the_columns_it_names_whatever_their_case():
    expression = compile_sql_expression("upper(S) || cast(I AS VARCHAR) = 'X'", ROWS.schema)
    assert expression.columns == {"s", "i"}
    assert expression.source == "upper(S) || cast(I AS VARCHAR) = 'X'"


@pytest.mark.parametrize("expression, message", [
    ("i +", "cannot parse the SQL at line 1, column 3"),
    ("nope + 1", "unknown column 'nope' (columns: id, i, j, f, d, s, t, ts, day, b) at line 1, column 1"),
    ("i + frob(j)", "unknown function frob() (functions:"),
    ("i = (SELECT 1)", "subqueries are not supported at line 1, column 6"),
    ("i IN (SELECT 1)", "subqueries are not supported"),
    ("sum(i) OVER ()", "window functions (OVER) are not supported"),
    ("1 + sum(i)", "the aggregate sum() is not allowed here: an aggregate is a whole SELECT item (or part of "
                   "HAVING) at line 1, column 5"),
    ("1 + CAST(i AS SMALLINT)", "CAST to SMALLINT is not supported (types: VARCHAR, BIGINT, INTEGER, DOUBLE, BOOLEAN, "
                            "DATE, TIMESTAMP, DECIMAL(p, s))"),
    ("1 + TRY_CAST(s AS BIGINT)", "unknown function TRY_CAST() (functions:"),
    ("rows.i > 1", "qualified column 'rows.i': a job reads one table, name its columns alone"),
    ("s + 1", "cannot compute s + 1"),
    ("s LIKE t", "a LIKE pattern is a literal, not t"),
    ("substr(s, i)", "substring's start is a literal, not i at line 1, column 11"),
    ("date_trunc('fortnight', ts)", "date_trunc: unknown unit 'fortnight'"),
    ("time_bucket(INTERVAL '1 day 2 hours', ts)", "time_bucket's width is one count of one unit"),
    ("time_bucket(INTERVAL '1 month', ts, TIMESTAMP '2000-01-15')", "takes an origin for widths of days or less"),
    ("extract(century FROM ts)", "unknown date part 'century'"),
    ("i AND j", "i is int64, not a condition"),
    ("i; j", "expected one SQL expression"),
])
def test_what_is_not_supported_is_refused_naming_it_and_where(expression, message):
    with pytest.raises(JobDefinitionError) as caught:
        compile_sql_expression(expression, ROWS.schema)
    assert message in str(caught.value)


def test_a_position_counts_lines_and_columns_in_the_text_as_written():
    with pytest.raises(JobDefinitionError, match="unknown column 'nope' .* at line 3, column 9$"):
        compile_sql_expression("i > 0\n  AND (j < 2\n     OR nope IS NULL)", ROWS.schema)


# -- a property: generated conditions over generated rows, three-valued logic and all ----------------------

VALUES = st.one_of(st.none(), st.integers(-3, 3))
TEXT = st.one_of(st.none(), st.text(alphabet="aAb_%", max_size=3))
OPERAND = st.sampled_from(["x", "y", "x + y", "x - 1", "x * y", "2"])
COMPARISON = st.builds(lambda a, op, b: f"{a} {op} {b}", OPERAND, st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
                       OPERAND)
ATOM = st.one_of(
    COMPARISON,
    st.builds(lambda a: f"{a} IS NULL", OPERAND),
    st.builds(lambda a, items: f"{a} IN ({', '.join(items)})", OPERAND,
              st.lists(st.sampled_from(["0", "1", "-2", "NULL"]), min_size=1, max_size=3)),
    st.builds(lambda a, lo, hi: f"{a} BETWEEN {lo} AND {hi}", OPERAND, st.integers(-3, 2), st.integers(-2, 3)),
    st.builds(lambda p, i: f"s {'I' if i else ''}LIKE '{p}'", st.text(alphabet="aAb_%", max_size=4), st.booleans()),
    st.just("s IS NULL"),
)
CONDITION = st.recursive(ATOM, lambda inner: st.one_of(
    st.builds(lambda a, b: f"({a}) AND ({b})", inner, inner),
    st.builds(lambda a, b: f"({a}) OR ({b})", inner, inner),
    st.builds(lambda a: f"NOT ({a})", inner),
    st.builds(lambda a, v, w: f"CASE WHEN {a} THEN {v} ELSE {w} END = 1", inner, OPERAND, OPERAND),
), max_leaves=5)


@given(rows=st.lists(st.tuples(VALUES, VALUES, TEXT), min_size=1, max_size=8), condition=CONDITION)
def test_generated_conditions_over_generated_rows_agree_with_duckdb(rows, condition):
    table = pa.table({"id": pa.array(range(len(rows)), pa.int64()),
                      "x": pa.array([r[0] for r in rows], pa.int64()), "y": pa.array([r[1] for r in rows], pa.int64()),
                      "s": pa.array([r[2] for r in rows], pa.string())})
    assert tally(condition, table) == duck(condition, table), condition
