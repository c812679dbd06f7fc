"""Jobs written in SQL: one statement over a named table becomes the job model (keys, aggregates, filter, select,
having, window key as SQL text); what SQL says that Tally cannot do is refused naming the construct and its
line and column; HAVING holds for everything served."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from chalicelib.errors import JobDefinitionError
from chalicelib.jobs import Job, JobCatalog, load_jobs
from chalicelib.tables import load_tables

from .conftest import scheduled_event, uservisits_rows

TABLES = load_tables("reducers")


def sql_job(sql: str, name: str = "q") -> Job:
    return Job.from_sql(name, sql, TABLES)


def refusal(sql: str) -> str:
    with pytest.raises(JobDefinitionError) as caught:
        sql_job(sql)
    return str(caught.value)


def test_an_aggregation_is_its_keys_and_aggregates_in_select_order_as_written():
    job = sql_job("""
        SELECT countryCode AS country, count(*) AS visits, substr(sourceIP, 1, 3) AS net,
               SUM(adRevenue) revenue, avg(duration)
        FROM uservisits
        WHERE duration > 10 AND searchWord LIKE 'a%'
        GROUP BY country, 3
        HAVING count(*) > 1 AND revenue > 0
    """)
    assert (job.prefix, job.format, job.language) == ("uservisits/", TABLES["uservisits"].format, "sql")
    assert job.keys == {"country": "countryCode", "net": "substr(sourceIP, 1, 3)"}
    assert job.aggregates == {"visits": "count(*)", "revenue": "SUM(adRevenue)", "avg(duration)": "avg(duration)"}
    assert job.filter == "duration > 10 AND searchWord LIKE 'a%'"
    assert job.having == '"visits" > 1 AND "revenue" > 0'
    assert job.sql.startswith("SELECT countryCode AS country") and job.window_key is None
    assert job.plan.key_names == ["country", "net"]


def test_a_scan_is_its_columns_and_filter_and_star_is_every_column():
    job = sql_job("SELECT pageURL, pageRank * 2 AS double_rank FROM rankings WHERE pageRank > 10")
    assert job.is_scan and job.select == {"pageURL": "pageURL", "double_rank": "pageRank * 2"}
    assert job.filter == "pageRank > 10"
    assert sql_job("SELECT * FROM rankings").select == {"pageURL": "pageURL", "pageRank": "pageRank",
                                                        "avgDuration": "avgDuration"}


def test_group_by_all_an_alias_a_position_or_the_expression_name_the_same_keys():
    shapes = ["GROUP BY ALL", "GROUP BY day, countryCode", "GROUP BY 1, 2",
              "GROUP BY date_trunc('day', visitDate), countryCode"]
    jobs = [sql_job(f"SELECT date_trunc('day', visitDate) AS day, countryCode, count(*) AS n FROM uservisits {g}")
            for g in shapes]
    assert {json.dumps(job.keys) for job in jobs} == {json.dumps({"day": "date_trunc('day', visitDate)",
                                                                  "countryCode": "countryCode"})}
    assert {job.window_key for job in jobs} == {"day"}  # date_trunc: the API's window_from/window_to filter on it


def test_a_group_by_expression_not_selected_is_a_key_too():
    job = sql_job("SELECT count(*) AS n FROM uservisits GROUP BY countryCode, languageCode")
    assert job.keys == {"countryCode": "countryCode", "languageCode": "languageCode"}


def test_the_same_text_in_sql_and_in_python_is_another_fingerprint():
    sql = sql_job("SELECT substr(sourceIP, 1, 8) AS p, sum(adRevenue) AS r FROM uservisits GROUP BY p")
    python = Job(name="q", prefix="uservisits/", format=TABLES["uservisits"].format,
                 keys={"p": "substr(sourceIP, 1, 8)"}, aggregates={"r": "sum(adRevenue)"})
    assert sql.plan.fingerprint != python.plan.fingerprint
    having = sql.model_copy(update={"having": '"r" > 1'})
    assert having.plan.fingerprint == sql.plan.fingerprint  # HAVING filters what is served, not the state


def test_a_sql_job_round_trips_through_its_description():
    job = load_jobs("reducers").get("page-latency")
    derived = ("kind", "fingerprint", "columns", "arrow_schema")  # what describe() adds to the definition
    again = Job.model_validate({k: v for k, v in job.describe().items() if k not in derived})
    assert again == job and again.plan.fingerprint == job.plan.fingerprint
    assert job.describe()["sql"].startswith("SELECT path, upper(method) AS method")


@pytest.mark.parametrize("sql, message", [
    ("SELECT countryCode, count(*) FROM uservisits u JOIN rankings r ON true GROUP BY 1",
     "JOIN is not supported in a job at line 1, column 48"),
    ("SELECT countryCode, count(*) FROM uservisits, rankings GROUP BY 1",
     "JOIN is not supported in a job at line 1, column 45"),
    ("SELECT countryCode, count(*) FROM uservisits\nWHERE duration IN (SELECT 1) GROUP BY 1",
     "subqueries are not supported at line 2, column 20"),
    ("SELECT countryCode FROM (SELECT * FROM uservisits)", "subqueries are not supported at line 1, column 26"),
    ("SELECT countryCode, sum(duration) OVER (PARTITION BY countryCode) FROM uservisits",
     "window functions (OVER) are not supported: SUM(duration) OVER (PARTITION BY countryCode) at line 1, column 21"),
    ("SELECT countryCode, count(*) FROM uservisits GROUP BY 1\nORDER BY 2 DESC LIMIT 10",
     "ORDER BY is not supported in a job at line 2, column 1"),
    ("SELECT pageURL FROM rankings LIMIT 10", "LIMIT is not supported in a job at line 1, column 30"),
    ("SELECT DISTINCT countryCode FROM uservisits", "SELECT DISTINCT is not supported in a job at line 1, column 8"),
    ("SELECT DISTINCT ON (countryCode) countryCode FROM uservisits",
     "DISTINCT ON is not supported in a job at line 1, column 8"),
    ("WITH v AS (SELECT * FROM uservisits) SELECT countryCode FROM v",
     "WITH (common table expressions) is not supported in a job at line 1, column 1"),
    ("SELECT pageURL FROM rankings UNION SELECT pageURL FROM rankings",
     "UNION is not supported: a job is one SELECT at line 1, column 30"),
    ("SELECT pageURL FROM rankings;\nSELECT 1", "a job is one statement; a second one starts at line 2, column 1"),
    ("SELECT pageURL FROM rankins", "unknown table 'rankins' (tables: uservisits, rankings, requests) at line 1, "
                                    "column 21"),
    ("SELECT pageURL FROM main.rankings", "qualified table name main.rankings"),
    ("SELECT * FROM read_csv('x.csv')", "FROM takes a table's name"),
    ("SELECT pageUrl, pageRnk FROM rankings", "unknown column 'pageRnk' (columns: pageURL, pageRank, avgDuration) "
                                              "at line 1, column 17"),
    ("SELECT countryCode, frob(duration) FROM uservisits GROUP BY 1", "unknown function frob() (functions:"),
    ("SELECT countryCode, median(duration) FROM uservisits GROUP BY 1",
     "the aggregate median() is not supported (aggregates: count, sum"),
    ("SELECT countryCode, languageCode, count(*) FROM uservisits GROUP BY countryCode",
     "languageCode is neither in GROUP BY nor an aggregate at line 1, column 21"),
    ("SELECT countryCode, count(*) FROM uservisits WHERE count(*) > 1 GROUP BY 1",
     "the aggregate COUNT(*) cannot be part of WHERE: use HAVING to filter groups at line 1, column 52"),
    ("SELECT countryCode, sum(adRevenue) / count(*) FROM uservisits GROUP BY 1",
     "the aggregate SUM(adRevenue) cannot be part of a SELECT item: an aggregate is a whole SELECT item"),
    ("SELECT countryCode, sum(count(*)) FROM uservisits GROUP BY 1",
     "the aggregate count() is not allowed here: an aggregate is a whole SELECT item (or part of HAVING) at "
     "line 1, column 25"),
    ("SELECT countryCode, sum(DISTINCT duration) FROM uservisits GROUP BY 1",
     "sum(DISTINCT ...) is not supported (only count(DISTINCT x)) at line 1, column 21"),
    ("SELECT countryCode, count(*) FROM uservisits GROUP BY 1 HAVING avg(duration) > 1",
     "HAVING's aggregate AVG(duration) is not a SELECT item: select it (AS a name) to filter on it at line 1, "
     "column 64"),
    ("SELECT countryCode, count(*) FROM uservisits GROUP BY 1 HAVING duration > 1",
     "HAVING's duration is neither a GROUP BY key nor an output (outputs: countryCode, count(*))"),
    ("SELECT count(*) FROM uservisits", "an aggregate without GROUP BY is one total over every row"),
    ("SELECT countryCode FROM uservisits GROUP BY countryCode", "GROUP BY without an aggregate"),
    ("SELECT countryCode, count(*) FROM uservisits GROUP BY ROLLUP (countryCode)", "GROUP BY ROLLUP is not supported"),
    ("SELECT countryCode, count(*) FROM uservisits GROUP BY 3", "GROUP BY 3: the SELECT has 2 items"),
    ("SELECT countryCode, count(*) AS countryCode FROM uservisits GROUP BY 1",
     "two outputs are named 'countryCode': give one an alias (AS name) at line 1, column 21"),
    ("SELECT pageURL FROM rankings HAVING pageRank > 1", "HAVING needs GROUP BY"),
    ("SELECT pageURL FROM rankings WHERE pageRank", "WHERE pageRank is int64, not a condition"),
    ("SELECT countryCode, sum(searchWord) FROM uservisits GROUP BY 1",
     "aggregate 'sum(searchWord)': cannot sum values of type string at line 1, column 21"),
    ("SELECT countryCode, approx_quantile(duration, 2) FROM uservisits GROUP BY 1",
     "the quantile q is a number from 0 to 1, not 2.0"),
    ("SELECT u.countryCode, count(*) FROM uservisits u GROUP BY 1", "qualified column 'u.countryCode'"),
    ("SELECT FROM WHERE", "cannot parse the SQL"),
    ("", "the SQL holds no statement"),
    ("INSERT INTO rankings VALUES (1)", "a job is a SELECT statement"),
])
def test_what_a_job_cannot_do_is_refused_naming_the_construct_and_where(sql, message):
    assert message in refusal(sql)


def test_a_refusal_names_the_job():
    assert refusal("SELECT nope FROM rankings").startswith("job 'q': unknown column 'nope'")


def test_filter_masks_an_aggregates_argument_and_count_distinct_is_the_hll_sketch():
    job = sql_job("SELECT countryCode, count(*) FILTER (WHERE duration > 1) AS long, "
                  "sum(duration) FILTER (WHERE duration > 100) AS none, count(DISTINCT sourceIP) AS ips, "
                  "count(sourceIP) AS n FROM uservisits GROUP BY 1")
    rows = pa.table({name: pa.array(values, job.format.schema.field(name).type) for name, values in {
        "sourceIP": ["a", "b", "a", None], "destURL": ["u"] * 4, "visitDate": [None] * 4,
        "adRevenue": [None] * 4, "userAgent": ["x"] * 4, "countryCode": ["USA"] * 4, "languageCode": ["en"] * 4,
        "searchWord": ["w"] * 4, "duration": [1, 2, 3, None]}.items()})
    plan = job.plan
    assert plan.finalize(plan.lift(rows)).to_pylist() == [
        {"countryCode": "USA", "long": 2, "none": None, "ips": 2, "n": 3}]
    assert type(plan.aggregates[2].function).__name__ == "ApproxDistinct"


# -- HAVING is applied to everything served --------------------------------------------------------------

HAVING = Job.from_sql("nets", """
    SELECT substr(sourceIP, 1, 3) AS net, count(*) AS visits, sum(adRevenue) AS revenue
    FROM uservisits GROUP BY net HAVING count(*) >= 2
""", TABLES)
# The same in Python syntax: having is a job-model field, not only SQL's.
PYTHON_HAVING = Job(name="nets-py", prefix="uservisits/", format=TABLES["uservisits"].format,
                    keys={"net": "substr(sourceIP, 1, 3)"}, aggregates={"visits": "count()"}, having="visits >= 2")
IPS = [("1.1.1.1", "1"), ("1.1.2.2", "2"), ("2.2.2.2", "4"), ("3.3.3.3", "8"), ("3.3.4.4", "16"), ("3.3.5.5", "32")]


@pytest.fixture
def served(runtime, lambdas, uploads):
    runtime.__dict__["jobs"] = JobCatalog([HAVING, PYTHON_HAVING])  # before the mapper and reducer are built
    record = uploads.put("uservisits/a.csv", uservisits_rows(*IPS))
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    return lambdas.http


def get(http, path: str) -> tuple[int, dict]:
    response = http.get(path)
    return response.status_code, json.loads(response.body)


def test_having_keeps_only_the_groups_it_holds_for_in_pages_totals_and_single_groups(served):
    status, body = get(served, "/jobs/nets/results?limit=1")
    assert status == 200 and body["total_rows"] == 2
    rows = [body["rows"][0]]
    status, body = get(served, f"/jobs/nets/results?limit=1&cursor={body['next_cursor']}")
    rows += body["rows"]
    assert body["next_cursor"] is None
    assert rows == [{"key": {"net": "1.1"}, "values": {"visits": 2, "revenue": 3}},
                    {"key": {"net": "3.3"}, "values": {"visits": 3, "revenue": 56}}]
    assert get(served, "/jobs/nets/results/3.3")[0] == 200
    status, body = get(served, "/jobs/nets/results/2.2")  # kept by the reducer, not served
    assert status == 404 and "has no group '2.2'" in body["message"]
    status, body = get(served, "/jobs/nets/results?order_by=visits&desc=true&fresh=true")
    assert [row["key"]["net"] for row in body["rows"]] == ["3.3", "1.1"]


def test_a_python_job_may_have_a_having_too(served):
    status, body = get(served, "/jobs/nets-py/results")
    assert status == 200 and [row["key"]["net"] for row in body["rows"]] == ["1.1", "3.3"]


def test_the_api_describes_a_sql_job_with_its_statement(lambdas):
    response = lambdas.http.get("/jobs")
    jobs = {job["name"]: job for job in json.loads(response.body)["jobs"]}
    assert jobs["page-latency"]["sql"] == load_jobs("reducers").get("page-latency").sql
    assert jobs["page-latency"]["language"] == "sql" and jobs["visits-by-browser"]["language"] == "python"
    from chalicelib import openapi

    assert {"sql", "language", "having", "window_key"} <= set(openapi.SCHEMAS["Job"]["properties"])
