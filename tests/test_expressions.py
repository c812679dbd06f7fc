"""The expression language of job definitions, and the validation a Job gets from it.

Each test reads as a specification: given these rows, the expression evaluates to these values; given this
text, the job is refused with a message naming the problem.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from pydantic import ValidationError

from chalicelib.errors import JobDefinitionError, JobNotFound
from chalicelib.expressions import compile_expression
from chalicelib.jobs import CsvFormat, Job, load_jobs

ROWS = pa.table({
    "ip": ["158.112.27.3", "1.2.3.4", None],
    "n": pa.array([1, 5, None], pa.int64()),
    "f": [1.5, -2.0, 3.0],
    "s": ["Ab", "cD", None],
    "ts": pa.array([dt.datetime(2024, 5, 17, 13, 45), dt.datetime(1999, 12, 31, 23, 59), None], pa.timestamp("us")),
})
COLUMNS = ROWS.column_names


def values(source: str, batch: pa.Table | pa.RecordBatch = ROWS) -> list:
    """The expression evaluated over `batch`, one Python value per row."""
    return compile_expression(source, batch.column_names).evaluate_array(batch).to_pylist()


def refusal(source: str) -> str:
    with pytest.raises(JobDefinitionError) as caught:
        compile_expression(source, COLUMNS)
    return str(caught.value)


# --- strings ----------------------------------------------------------------------------------------------


def test_substr_is_sql_substr_one_based_with_a_length():
    assert values("substr(ip, 1, 8)") == ["158.112.", "1.2.3.4", None]


def test_substr_without_a_length_runs_to_the_end():
    assert values("substr(ip, 5)") == ["112.27.3", "3.4", None]


def test_substr_of_length_zero_is_the_empty_string():
    assert values("substr(ip, 3, 0)") == ["", "", None]


@pytest.mark.parametrize("source, expected", [
    ("lower(s)", ["ab", "cd", None]),
    ("upper(s)", ["AB", "CD", None]),
    ("startswith(ip, '158.')", [True, False, None]),
    ("endswith(ip, '.4')", [False, True, None]),
    ("length(s)", [2, 2, None]),
])
def test_string_functions(source, expected):
    assert values(source) == expected


# --- comparisons and boolean logic, with SQL's three-valued nulls -----------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("n > 2", [False, True, None]),
    ("n >= 5", [False, True, None]),
    ("n < 5", [True, False, None]),
    ("n <= 1", [True, False, None]),
    ("n == 5", [False, True, None]),
    ("n != 5", [True, False, None]),
    ("s == 'Ab'", [True, False, None]),
    ("1 < n < 5", [False, False, None]),
])
def test_comparisons_are_null_when_a_side_is_null(source, expected):
    assert values(source) == expected


@pytest.mark.parametrize("source, expected", [
    ("n > 0 and f > 0", [True, False, None]),
    ("n > 2 and f > 5", [False, False, False]),  # null AND false is false
    ("n > 2 or f > 0", [True, True, True]),  # null OR true is true
    ("n > 2 or f > 5", [False, True, None]),
    ("not n > 2", [True, False, None]),
    ("not (n > 2 or n is None)", [True, False, False]),
])
def test_and_or_not_follow_kleene_logic(source, expected):
    assert values(source) == expected


def test_is_none_and_is_not_none_test_for_null():
    assert values("n is None") == [False, False, True]
    assert values("s is not None") == [True, True, False]


NO_NULLS = ROWS.slice(0, 2)


def test_in_follows_sql_null_semantics():
    # SQL: NULL IN (...) is NULL, so neither `in` nor `not in` keeps a row whose value is missing.
    assert values("n in (1, 7)") == [True, False, None]
    assert values("n not in (1, 7)") == [False, True, None]


def test_in_a_literal_tuple_tests_membership():
    assert values("s in ('Ab', 'zz')", NO_NULLS) == [True, False]


def test_in_a_literal_list_tests_membership():
    assert values("n in [5, 7]", NO_NULLS) == [False, True]


def test_not_in_a_literal_tuple_is_the_complement():
    assert values("n not in (1, 2)", NO_NULLS) == [False, True]


def test_a_job_can_filter_with_in():
    job = make_job(filter="label in ('web', 'app')")
    rows = pa.table({"k": ["a", "a", "b"], "v": pa.array([1, 2, 4], pa.decimal128(18, 6)),
                     "label": ["web", "cli", "app"]})
    assert job.plan.finalize(job.plan.lift(rows)).sort_by("k").to_pylist() == [
        {"k": "a", "total": 1}, {"k": "b", "total": 4}]


# --- arithmetic and other functions ------------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("n * 2 + 1", [3, 11, None]),
    ("n - 10", [-9, -5, None]),
    ("-n", [-1, -5, None]),
    ("f / 2", [0.75, -1.0, 1.5]),
    ("abs(f)", [1.5, 2.0, 3.0]),
    ("coalesce(n, 0)", [1, 5, 0]),
])
def test_arithmetic(source, expected):
    assert values(source) == expected


def test_date_trunc_floors_timestamps_to_the_unit():
    assert values("date_trunc('month', ts)") == [dt.datetime(2024, 5, 1), dt.datetime(1999, 12, 1), None]
    assert values("date_trunc('hour', ts)") == [dt.datetime(2024, 5, 17, 13), dt.datetime(1999, 12, 31, 23), None]


def test_year_month_day_hour_extract_fields():
    assert values("year(ts)") == [2024, 1999, None]
    assert values("month(ts)") == [5, 12, None]
    assert values("day(ts)") == [17, 31, None]
    assert values("hour(ts)") == [13, 23, None]


# --- literals and evaluation ------------------------------------------------------------------------------


def test_a_literal_evaluates_to_itself_and_evaluate_array_broadcasts_it():
    expression = compile_expression("'USA'", COLUMNS)
    assert expression.evaluate(ROWS) == "USA"
    assert values("'USA'") == ["USA", "USA", "USA"]


def test_a_constant_expression_is_broadcast_to_the_batch_length():
    assert values("1 + 2") == [3, 3, 3]
    assert values("1 + 2", ROWS.slice(0, 0)) == []


def test_a_record_batch_evaluates_like_a_table():
    batch = ROWS.to_batches()[0]
    assert values("substr(ip, 1, 4)", batch) == ["158.", "1.2.", None]


def test_an_expression_records_the_columns_it_reads():
    assert compile_expression("substr(ip, 1, 8)", COLUMNS).columns == {"ip"}
    assert compile_expression("n > 2 and f < 1", COLUMNS).columns == {"n", "f"}
    assert compile_expression("1 + 2", COLUMNS).columns == frozenset()


# --- what the language refuses ----------------------------------------------------------------------------


def test_an_unknown_column_is_refused_naming_it_and_the_known_columns():
    message = refusal("nope + 1")
    assert "unknown column 'nope'" in message
    assert "ip, n, s, ts" in message


def test_an_unknown_function_is_refused_naming_it():
    assert "unknown function 'median'" in refusal("median(n)")


@pytest.mark.parametrize("source, problem", [
    ("lambda: 1", "Lambda is not supported"),
    ("ip.upper", "Attribute is not supported"),
    ("().__class__", "Attribute is not supported"),
    ("ip[0]", "Subscript is not supported"),
    ("n if n else 1", "IfExp is not supported"),
    ("n ** 2", "Pow is not supported"),
    ("[1, 2]", "List is not supported"),
])
def test_unsupported_syntax_is_refused_naming_the_construct(source, problem):
    message = refusal(source)
    assert problem in message
    assert source in message


@pytest.mark.parametrize("source, name", [
    ("__import__('os')", "__import__"),
    ("open('/etc/passwd')", "open"),
    ("ip.upper()", "ip.upper"),
    ("eval('1')", "eval"),
])
def test_nothing_outside_the_function_list_can_be_called(source, name):
    assert f"unknown function {name!r}" in refusal(source)


@pytest.mark.parametrize("source, problem", [
    ("n is 1", "`is` only compares with None"),
    ("n in n", "`in` takes a literal tuple or list"),
    ("substr(ip, n, 3)", "expected a literal"),
    ("lower(s=ip)", "positional arguments only"),
    ("(", "cannot parse"),
])
def test_misused_constructs_are_refused_with_a_reason(source, problem):
    assert problem in refusal(source)


def test_substr_start_is_one_based_so_zero_is_refused_when_evaluated():
    with pytest.raises(JobDefinitionError, match="start is a literal integer >= 1"):
        values("substr(ip, 0, 3)")


def test_date_trunc_refuses_an_unknown_unit_when_evaluated():
    with pytest.raises(JobDefinitionError, match="unknown unit 'decade'"):
        values("date_trunc('decade', ts)")


# --- jobs: validated at construction -----------------------------------------------------------------------


def make_job(**changes) -> Job:
    definition = dict(
        name="t", prefix="p/",
        format=CsvFormat(columns={"k": "string", "v": "decimal(18,6)", "label": "string"}),
        keys={"k": "k"}, aggregates={"total": "sum(v)"},
    )
    return Job(**{**definition, **changes})


def test_a_valid_job_builds_its_plan():
    job = make_job(filter="v > 0")
    assert job.plan.key_names == ["k"]
    assert [spec.out for spec in job.plan.aggregates] == ["total"]


@pytest.mark.parametrize("changes, problem", [
    ({"keys": {"k": "substr(nope, 1, 2)"}}, "unknown column 'nope'"),
    ({"aggregates": {"m": "median(v)"}}, "unknown aggregate 'median'"),
    ({"aggregates": {"total": "sum(label)"}}, "cannot sum values of type string"),
    ({"aggregates": {"total": "sum(v, v)"}}, "takes exactly one expression"),
    ({"aggregates": {"total": "v + 1"}}, "expected function(expression)"),
    ({"filter": "substr(k, 1, 2)"}, "is not a condition"),
    ({"filter": "nope > 1"}, "unknown column 'nope'"),
    ({"keys": {"total": "k"}}, "must be distinct"),
    ({"format": {"kind": "csv", "columns": {"k": "string", "v": "money"}}}, "unknown column type 'money'"),
])
def test_a_bad_job_definition_fails_validation_naming_the_problem(changes, problem):
    with pytest.raises(ValidationError) as caught:
        make_job(**changes)
    assert problem in str(caught.value)


def test_a_job_name_must_be_a_lowercase_slug():
    with pytest.raises(ValidationError):
        make_job(name="Bad Name")


def test_the_bundled_jobs_load_with_their_definitions():
    catalog = load_jobs("reducers")
    assert [job.name for job in catalog] == ["bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "bdb-scan-1a", "bdb-scan-1b",
                                             "bdb-scan-1c", "duration-histogram", "page-latency", "revenue-by-day",
                                             "visits-by-browser", "visits-by-country"]
    for name, length in [("bdb-agg-2a", 8), ("bdb-agg-2b", 10), ("bdb-agg-2c", 12)]:
        job = catalog.get(name)
        assert job.keys == {"sourceIP_prefix": f"substr(sourceIP, 1, {length})"}
        assert job.aggregates == {"adRevenue": "sum(adRevenue)"}
        assert job.plan.state_schema.field("adRevenue").type == pa.decimal128(38, 6)
    assert catalog.get("page-latency").plan.key_names == ["path", "method"]


def test_the_catalog_refuses_an_unknown_job_name():
    with pytest.raises(JobNotFound):
        load_jobs("reducers").get("no-such-job")


def test_a_selection_of_jobs_serves_only_those_and_refuses_unknown_names():
    catalog = load_jobs("reducers")
    chosen = catalog.select(" bdb-agg-2a,bdb-scan-1a ")
    assert [job.name for job in chosen] == ["bdb-agg-2a", "bdb-scan-1a"]
    assert [job.name for job in chosen.for_key("uservisits/a.csv")] == ["bdb-agg-2a"]
    assert catalog.select("") is catalog
    with pytest.raises(JobNotFound):
        catalog.select("bdb-agg-2a,no-such-job")


@pytest.mark.parametrize("key, matches", [
    ("uservisits/part-00000.csv", True),
    ("uservisits/2024/01/part-00000.csv.gz", True),
    ("uservisits/", False),  # the "directory" placeholder a console creates
    ("uservisits/2024/", False),
    ("rankings/part-00000.csv", False),
    ("xuservisits/part-00000.csv", False),
])
def test_a_job_without_suffix_reads_every_object_under_its_prefix(key, matches):
    assert load_jobs("reducers").get("bdb-agg-2a").matches(key) is matches


@pytest.mark.parametrize("key, matches", [
    ("requests/2024/05/17/a.jsonl", True),
    ("requests/a.jsonl.gz", True),  # the suffix is tested after stripping the compression extension
    ("requests/a.jsonl.gzip", True),
    ("requests/a.json", False),
    ("requests/a.jsonl.bak", False),
    ("requests/a.jsonl/", False),
    ("other/a.jsonl", False),
])
def test_a_job_with_a_suffix_reads_only_matching_objects(key, matches):
    assert load_jobs("reducers").get("page-latency").matches(key) is matches


def test_the_catalog_finds_every_job_reading_a_key():
    catalog = load_jobs("reducers")
    assert [job.name for job in catalog.for_key("uservisits/part-1.csv")] == [
        "bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "duration-histogram", "revenue-by-day", "visits-by-browser",
        "visits-by-country"]
    assert [job.name for job in catalog.for_key("requests/x.jsonl.gz")] == ["page-latency"]
    assert catalog.for_key("elsewhere/x.csv") == []
