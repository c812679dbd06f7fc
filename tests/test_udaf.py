"""User-defined aggregates and map functions: the same laws as the built-ins, and their failure modes."""
from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.aggregation import Serializer, register_aggregate
from chalicelib.errors import JobDefinitionError, MapFunctionFailed
from chalicelib.jobs import CsvFormat, Job, load_jobs

from .test_aggregation_laws import LAWS, KEYS, assert_same_partial, check_monoid_laws

# The distinct values of a group, as a sorted JSON list: a set union, so a commutative monoid.
register_aggregate(
    "value_set",
    init=set,
    accumulate=lambda state, values: state | set(values.to_pylist()),
    merge=lambda a, b: a | b,
    serializer=Serializer(dumps=lambda s: json.dumps(sorted(s)).encode(), loads=lambda b: set(json.loads(b))),
    finalize=sorted,
    result_type=pa.list_(pa.int64()),
)


def udaf_plan():
    return Job(name="u", prefix="p/", format=CsvFormat(columns={"k": "string", "v": "int64"}),
               keys={"k": "k"}, aggregates={"values": "value_set(v)", "n": "count(v)"}).plan


ROWS = st.lists(st.tuples(KEYS, st.none() | st.integers(-5, 5)), max_size=30)


def table(rows):
    keys, values = zip(*rows) if rows else ((), ())
    return pa.table({"k": pa.array(keys, pa.string()), "v": pa.array(values, pa.int64())})


@LAWS
@given(a=ROWS, b=ROWS, c=ROWS)
def test_a_registered_aggregate_obeys_the_merge_laws(a, b, c):
    plan = udaf_plan()
    check_monoid_laws(plan, *(plan.lift(table(rows)) for rows in (a, b, c)))
    assert_same_partial(plan, plan.lift(table(a + b)), plan.merge([plan.lift(table(a)), plan.lift(table(b))]))


@LAWS
@given(rows=ROWS)
def test_a_registered_aggregate_finalizes_to_its_meaning(rows):
    plan = udaf_plan()
    got = {r["k"]: r["values"] for r in plan.finalize(plan.lift(table(rows))).to_pylist()}
    want: dict = {}
    for key, value in rows:
        want.setdefault(key, set()).update([] if value is None else [value])
    assert got == {key: sorted(values) for key, values in want.items()}


def test_registering_a_built_in_or_a_different_aggregate_under_a_taken_name_fails():
    with pytest.raises(JobDefinitionError, match="built-in"):
        register_aggregate("sum", init=int, accumulate=lambda s, v: s, merge=lambda a, b: a,
                           serializer=Serializer(bytes, bytes))
    with pytest.raises(JobDefinitionError, match="already registered"):
        register_aggregate("value_set", init=list, accumulate=lambda s, v: s, merge=lambda a, b: a + b,
                           serializer=Serializer(bytes, bytes))


def test_the_shipped_histogram_aggregate_counts_durations_per_bucket():
    job = load_jobs("reducers").get("duration-histogram")
    rows = pa.table({"languageCode": ["A", "A", "A", "B"], "duration": pa.array([0, 9, 95, 42], pa.int64())})
    plan = job.plan
    partial = plan.merge([plan.lift(rows.slice(0, 2)), plan.lift(rows.slice(2))])
    final = {r["languageCode"]: r for r in plan.finalize(partial).to_pylist()}
    assert final["A"]["duration_histogram"] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1] and final["A"]["visits"] == 3
    assert final["B"]["duration_histogram"] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


# --- map functions ----------------------------------------------------------------------------------------

def words(batch: pa.Table) -> pa.Table:
    """One row per word of `text`: more rows out than in, which no expression can do."""
    split = pc.split_pattern(batch["text"], " ")
    return pa.table({"word": pc.list_flatten(split), "n": pa.repeat(pa.scalar(1, pa.int64()), len(pc.list_flatten(split)))})


def map_job(function=words, columns=None, **extra) -> Job:
    return Job(name="m", prefix="p/", format=CsvFormat(columns={"text": "string"}), map=function,
               map_columns=columns or {"word": "string", "n": "int64"}, keys={"word": "word"},
               aggregates={"count": "sum(n)"}, **extra)


def test_a_map_function_runs_before_keys_and_aggregates():
    plan = map_job().plan
    rows = pa.table({"text": ["a b a", "b c"]})
    result = {r["word"]: int(r["count"]) for r in plan.finalize(plan.lift(rows)).to_pylist()}
    assert result == {"a": 2, "b": 2, "c": 1}
    assert plan.columns == frozenset({"text"})


def test_a_map_function_may_return_anything_with_to_arrow():
    class Frame:  # what a Polars DataFrame offers
        def __init__(self, table):
            self.table = table

        def to_arrow(self):
            return self.table

    plan = map_job(lambda batch: Frame(words(batch))).plan
    assert plan.finalize(plan.lift(pa.table({"text": ["x x"]}))).to_pylist() == [{"word": "x", "count": 2}]


def test_a_map_function_missing_its_declared_columns_fails_the_mapper():
    plan = map_job(lambda batch: pa.table({"other": batch["text"]})).plan
    with pytest.raises(MapFunctionFailed, match="lacks the declared columns"):
        plan.lift(pa.table({"text": ["x"]}))


def test_the_map_function_code_is_part_of_the_fingerprint():
    def upper_words(batch):
        return words(pa.table({"text": pc.utf8_upper(batch["text"])}))

    assert map_job().plan.fingerprint == map_job().plan.fingerprint
    assert map_job().plan.fingerprint != map_job(upper_words).plan.fingerprint


def test_a_map_function_is_given_the_columns_it_declares_it_reads():
    seen = []

    def spy(batch):
        seen.append(batch.column_names)
        return pa.table({"word": batch["a"], "n": pa.repeat(pa.scalar(1, pa.int64()), batch.num_rows)})

    job = Job(name="m", prefix="p/", format=CsvFormat(columns={"a": "string", "b": "string"}), map=spy,
              map_columns={"word": "string", "n": "int64"}, map_reads=["a"], keys={"word": "word"},
              aggregates={"count": "sum(n)"})
    assert job.plan.columns == frozenset({"a"})
    job.plan.lift(pa.table({"a": ["x"], "b": ["y"]}))
    assert seen == [["a"]]
    with pytest.raises(ValueError, match="unknown columns"):
        Job(**{**job.model_dump(exclude={"map"}), "map": spy, "map_reads": ["nope"]})


def test_map_columns_and_map_come_together():
    with pytest.raises(ValueError, match="map_columns"):
        Job(name="m", prefix="p/", format=CsvFormat(columns={"text": "string"}), map=words,
            keys={"word": "word"}, aggregates={"count": "sum(n)"})


def test_the_shipped_browser_job_classifies_user_agents():
    job = load_jobs("reducers").get("visits-by-browser")
    agents = ["Googlebot/2.1 (+http://www.googlebot.com/bot.html)", "Opera/9.60 (Windows NT 5.1; U; en)",
              "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)", "Mozilla/5.0 (X11) Gecko Firefox/3.0.1",
              "Mozilla/5.0 (Macintosh) AppleWebKit/525.18", "curl/8"]
    rows = pa.table({"userAgent": agents, "adRevenue": pa.array([Decimal(1)] * 6, pa.decimal128(18, 6))})
    got = {r["browser"]: r["visits"] for r in job.plan.finalize(job.plan.lift(rows)).to_pylist()}
    assert got == {"bot": 1, "Opera": 1, "MSIE": 1, "Firefox": 1, "Safari": 1, "other": 1}
