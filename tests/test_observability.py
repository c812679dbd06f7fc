"""What the handlers tell operators: one log record per job and object version with the job, the object key
and its version as top-level keys; per-job metrics in CloudWatch's Embedded Metric Format on Lambda (objects
mapped, bytes, rows, quarantined, partials merged, lag from the object's landing to its merge, and on every
tick the age of the oldest marker waiting); and the same records and metric sets as readable lines in local
mode."""
from __future__ import annotations

import datetime as dt
import io
import json

from chalicelib.engine import layout
from chalicelib.observability import NAMESPACE, Observer, make_logger
from chalicelib.settings import Settings

from .conftest import scheduled_event, uservisits_rows
from .test_fanout import Fanned, visits

NOW = dt.datetime(2026, 11, 27, 12, 0, 30, tzinfo=dt.timezone.utc)
MAPPED = {"job": "bdb-agg-2a", "key": "uservisits/a b.csv", "etag": "e1", "outcome": "mapped", "rows": 10,
          "bytes_read": 1700, "groups": 4, "reason": None}
QUARANTINED = {**MAPPED, "key": "uservisits/bad.csv.gz", "etag": "e2", "outcome": "quarantined", "rows": 0,
               "bytes_read": 0, "groups": 0, "reason": "not gzip"}
REDUCED = {"job": "bdb-agg-2a", "generation": 3, "merged": 2, "retracted": 0, "dropped": 0, "rows": 4,
           "conflict": False, "more_pending": False, "errors": [],
           "landed": ["2026-11-27T12:00:00.000Z", "2026-11-27T12:00:20+00:00"]}


def observer(log_format: str, service: str) -> tuple[Observer, io.StringIO]:
    stream = io.StringIO()
    settings = Settings(log_format=log_format)
    logger = make_logger(settings, service=service, stream=stream, engine_loggers=False)
    return Observer(settings, logger, lambda: NOW), stream


def emf_blobs(text: str) -> list[dict]:
    return [blob for blob in map(json.loads, filter(None, text.splitlines())) if "_aws" in blob]


def test_each_mapped_object_is_one_json_record_keyed_by_job_object_and_version(capsys):
    observe, logs = observer("json", "tally-test-json-logs")
    observe.mapped([MAPPED, QUARANTINED])
    records = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert [(r["message"], r["job"], r["key"], r["version"]) for r in records] == [
        ("mapped", "bdb-agg-2a", "uservisits/a b.csv", "e1"),
        ("quarantined", "bdb-agg-2a", "uservisits/bad.csv.gz", "e2")]
    assert records[1]["reason"] == "not gzip" and records[0]["level"] == "INFO"


def test_map_metrics_are_one_emf_blob_per_job(capsys):
    observe, _ = observer("json", "tally-test-json-map")
    other = {**MAPPED, "job": "bdb-agg-2c"}
    observe.mapped([MAPPED, {**MAPPED, "key": "uservisits/b.csv", "rows": 5, "bytes_read": 300}, QUARANTINED, other])
    blobs = emf_blobs(capsys.readouterr().out)
    by_job = {blob["job"]: blob for blob in blobs}
    assert set(by_job) == {"bdb-agg-2a", "bdb-agg-2c"}
    blob = by_job["bdb-agg-2a"]
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE == "Tally"
    assert "job" in directive["Dimensions"][0]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {"ObjectsMapped": "Count", "BytesMapped": "Bytes", "RowsMapped": "Count",
                     "ObjectsQuarantined": "Count"}
    # Powertools writes each metric as a list of values; CloudWatch aggregates them.
    assert (blob["ObjectsMapped"], blob["BytesMapped"], blob["RowsMapped"], blob["ObjectsQuarantined"]) == \
        ([2], [2000], [15], [1])


def test_reduce_metrics_carry_partials_merged_and_the_lag_of_each_object(capsys):
    observe, _ = observer("json", "tally-test-json-reduce")
    observe.reduced([REDUCED, {**REDUCED, "job": "bdb-agg-2b", "merged": 0, "landed": []}])
    [blob] = emf_blobs(capsys.readouterr().out)  # a job with nothing merged emits nothing
    assert blob["job"] == "bdb-agg-2a" and blob["PartialsMerged"] == [2]
    assert sorted(blob["LagSeconds"]) == [10.0, 30.0]
    units = {m["Name"]: m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["LagSeconds"] == "Seconds"


def test_local_mode_prints_the_same_records_and_metrics_as_readable_lines(capsys):
    observe, logs = observer("text", "tally-test-text")
    observe.mapped([MAPPED])
    observe.reduced([REDUCED])
    assert capsys.readouterr().out == ""  # no EMF blobs in the terminal
    lines = logs.getvalue().splitlines()
    assert all(not line.startswith("{") for line in lines)
    assert lines[0].endswith("INFO tally-test-text mapped job=bdb-agg-2a key=uservisits/a b.csv version=e1 rows=10 "
                             "bytes=1700 groups=4")
    metric_lines = [line for line in lines if " metrics " in line]
    assert "ObjectsMapped=1" in metric_lines[0] and "BytesMapped=1700" in metric_lines[0]
    assert "PartialsMerged=2" in metric_lines[1] and "LagSeconds=max 30.0" in metric_lines[1]


def test_the_deployed_handlers_emit_emf_for_a_real_map_and_reduce(lambdas, uploads, capfd):
    capfd.readouterr()
    record = uploads.put("uservisits/a.csv", uservisits_rows(("1.2.3.4", "1.5"), ("5.6.7.8", "2.5")))
    record["eventTime"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    blobs = emf_blobs("\n".join(line for line in capfd.readouterr().out.splitlines() if line.startswith("{")))
    mapped = {b["job"]: b for b in blobs if "ObjectsMapped" in b}
    merged = {b["job"]: b for b in blobs if "PartialsMerged" in b}
    assert set(mapped) == set(merged) == {"bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "duration-histogram",
                                          "revenue-by-day", "visits-by-browser", "visits-by-country"}
    assert mapped["bdb-agg-2a"]["RowsMapped"] == [2]
    # The merged object's, from its event time; and the age of the oldest marker when the tick listed the inbox.
    lags = merged["bdb-agg-2a"]["LagSeconds"]
    assert len(lags) == 2 and 5 <= max(lags) < 60 and min(lags) < 5


def test_a_large_object_counts_once_as_fanned_out_and_its_ranges_as_ranges(capsys):
    observe, _ = observer("json", "tally-test-json-ranges")
    fanned = {**MAPPED, "outcome": "fanned_out", "rows": 0, "bytes_read": 0}
    ranges = [{**MAPPED, "range": [i, 2], "rows": 3, "bytes_read": 100} for i in range(2)]
    observe.mapped([fanned, *ranges])
    [blob] = emf_blobs(capsys.readouterr().out)
    assert (blob["ObjectsFannedOut"], blob["RangesMapped"], blob["RowsMapped"]) == ([1], [2], [6])
    assert "ObjectsMapped" not in blob


def test_a_marker_that_cannot_be_applied_yet_shows_as_lag_growing_tick_after_tick(s3, capsys):
    fanned = Fanned(s3)
    tasks = fanned.put("uservisits/big.csv", visits(100))
    fanned.deliver(tasks[1:])  # its first range never lands: the version waits in the inbox
    job = fanned.runtime.jobs.get("bdb-agg-2a")
    written = min(o.last_modified for o in fanned.runtime.state_store.list(layout.inbox_prefix(job.name)))
    ticks = iter([written + dt.timedelta(seconds=10), written + dt.timedelta(seconds=70)])
    settings = Settings(log_format="json")
    observe = Observer(settings, make_logger(settings, service="tally-test-stuck", engine_loggers=False),
                       lambda: next(ticks))
    idle = fanned.runtime.jobs.get("page-latency")  # another prefix: nothing waits

    lags = []
    for _ in range(2):
        reports = [fanned.runtime.reducer.reduce_reported(j) for j in (job, idle)]
        observe.reduced([dict(report.__dict__) for report in reports])
        lags.append({blob["job"]: blob["LagSeconds"] for blob in emf_blobs(capsys.readouterr().out)})

    assert [tick["bdb-agg-2a"] for tick in lags] == [[10.0], [70.0]]  # nothing merged, and not silent
    assert [tick["page-latency"] for tick in lags] == [[0.0], [0.0]]


def test_local_mode_prints_a_waiting_jobs_lag_and_nothing_for_an_idle_one():
    observe, logs = observer("text", "tally-test-text-idle")
    tick = {**REDUCED, "merged": 0, "landed": [], "pending": 0, "pending_since": None}
    observe.reduced([tick, {**tick, "job": "bdb-agg-2c", "pending": 3, "pending_since": "2026-11-27T12:00:00Z"}])
    [line] = [line for line in logs.getvalue().splitlines() if " metrics " in line]
    assert "job=bdb-agg-2c" in line and "LagSeconds=max 30.0" in line
