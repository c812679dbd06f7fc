"""The mapper Lambda: given objects in the input bucket and their S3 events, these partials and results."""
from __future__ import annotations

import base64
import gzip
import json
from decimal import Decimal

import pyarrow as pa

from chalicelib.aggregation.codec import decode
from chalicelib.engine import layout
from chalicelib.engine.mapper import PartialAccumulator

from .conftest import STATE, collect_garbage, scheduled_event, uservisits_rows


def results(lambdas, job: str) -> dict:
    page = json.loads(lambdas.http.get(f"/jobs/{job}/results?limit=1000").body, parse_float=Decimal)
    return {tuple(row["key"].values()): row["values"] for row in page["rows"]}


def reduce(lambdas) -> list[dict]:
    return lambdas.lambda_.invoke("reduce_results", scheduled_event()).payload


def status(lambdas, job: str) -> dict:
    return json.loads(lambdas.http.get(f"/jobs/{job}/status").body)


def inbox(runtime, job: str) -> list[str]:
    return [o.key for o in runtime.state_store.list(layout.inbox_prefix(job))]


CSV = uservisits_rows(("158.112.27.3", "1.500000"), ("158.112.99.1", "2.25"), ("10.0.0.1", "100"),
                      ("158.112.27.3", "0.000001"))
EXPECTED_2A = {("158.112.",): {"adRevenue": Decimal("3.750001")}, ("10.0.0.1",): {"adRevenue": Decimal("100")}}


def test_csv_object_becomes_one_partial_per_matching_job(lambdas, runtime, uploads):
    record = uploads.put("uservisits/part-0.csv", CSV)

    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(record)).payload

    assert sorted((o["job"], o["outcome"], o["rows"]) for o in outcomes) == [
        (job, "mapped", 4) for job in ("bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "duration-histogram",
                                       "revenue-by-day", "visits-by-browser", "visits-by-country")]
    [key] = inbox(runtime, "bdb-agg-2a")
    marker = json.loads(runtime.state_store.get(key)[0])
    # A small object's partial travels inside its marker: no part object, one PUT per job.
    assert marker["parts"] == [] and list(runtime.state_store.list(layout.parts_prefix("bdb-agg-2a"))) == []
    partial, meta = decode(base64.b64decode(marker["inline"]), runtime.jobs.get("bdb-agg-2a").plan.fingerprint)
    assert dict(zip(partial.column("sourceIP_prefix").to_pylist(), partial.column("adRevenue").to_pylist())) == {
        "158.112.": Decimal("3.750001"), "10.0.0.1": Decimal("100")}
    assert meta["key"] == "uservisits/part-0.csv" and meta["rows"] == 4


def test_a_partial_above_the_inline_limit_is_written_as_a_part_the_marker_names(runtime, uploads):
    runtime.mapper.inline_limit = 0
    runtime.mapper.handle(uploads.event(uploads.put("uservisits/part-0.csv", CSV)))

    [key] = inbox(runtime, "bdb-agg-2a")
    marker = json.loads(runtime.state_store.get(key)[0])
    [part] = marker["parts"]
    assert "inline" not in marker
    partial, _ = decode(runtime.state_store.get(part)[0], runtime.jobs.get("bdb-agg-2a").plan.fingerprint)
    assert partial.num_rows == 2


def test_gzip_csv_maps_like_plain_csv(lambdas, uploads):
    record = uploads.put("uservisits/part-0.csv.gz", CSV, compress=True)
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    reduce(lambdas)
    assert results(lambdas, "bdb-agg-2a") == EXPECTED_2A


def test_json_lines_job_computes_count_mean_max_sum_after_filter(lambdas, uploads):
    lines = [
        {"ts": "2026-01-01 10:00:00", "method": "get", "path": "/", "status": 200, "latency_ms": 10.0, "bytes": 100},
        {"ts": "2026-01-01 10:00:01", "method": "GET", "path": "/", "status": 304, "latency_ms": 30.0, "bytes": 0},
        {"ts": "2026-01-01 10:00:02", "method": "post", "path": "/", "status": 201, "latency_ms": 5.5, "bytes": 7},
        {"ts": "2026-01-01 10:00:03", "method": "get", "path": "/", "status": 503, "latency_ms": 900.0, "bytes": 1},
        {"ts": "2026-01-01 10:00:04", "method": "get", "path": "/a", "status": 200, "latency_ms": None, "bytes": 2},
    ]
    record = uploads.put("requests/2026-01-01.jsonl", "".join(json.dumps(line) + "\n" for line in lines))

    lambdas.lambda_.invoke("map_object", uploads.event(record))
    reduce(lambdas)

    assert results(lambdas, "page-latency") == {
        ("/", "GET"): {"requests": 2, "mean_latency_ms": 20.0, "max_latency_ms": 30.0, "bytes": 100},
        ("/", "POST"): {"requests": 1, "mean_latency_ms": 5.5, "max_latency_ms": 5.5, "bytes": 7},
        ("/a", "GET"): {"requests": 1, "mean_latency_ms": None, "max_latency_ms": None, "bytes": 2},
    }


def test_every_record_of_an_event_is_mapped_and_encoded_keys_are_decoded(lambdas, uploads):
    first = uploads.put("uservisits/with space/ünïcode + plus.csv", uservisits_rows(("1.1.1.1", "1")))
    second = uploads.put("uservisits/b.csv", uservisits_rows(("2.2.2.2", "2")))

    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(first, second)).payload
    reduce(lambdas)

    assert {o["key"] for o in outcomes} == {"uservisits/with space/ünïcode + plus.csv", "uservisits/b.csv"}
    assert results(lambdas, "bdb-agg-2a") == {("1.1.1.1",): {"adRevenue": Decimal("1")},
                                              ("2.2.2.2",): {"adRevenue": Decimal("2")}}


def test_duplicated_event_is_counted_once_even_after_the_partial_was_merged(lambdas, runtime, uploads):
    record = uploads.put("uservisits/part-0.csv", CSV)
    event = uploads.event(record, record)  # S3 may repeat a record, even within one event

    lambdas.lambda_.invoke("map_object", event)
    reduce(lambdas)
    lambdas.lambda_.invoke("map_object", uploads.event(record))  # a late redelivery after the merge
    assert len(inbox(runtime, "bdb-agg-2a")) == 1
    reports = reduce(lambdas)

    assert results(lambdas, "bdb-agg-2a") == EXPECTED_2A
    assert inbox(runtime, "bdb-agg-2a") == []
    assert {r["job"]: r["dropped"] for r in reports}["bdb-agg-2a"] == 1


def test_unparseable_file_is_quarantined_and_reported_while_others_flow(lambdas, uploads):
    good = uploads.put("uservisits/good.csv", CSV)
    bad = uploads.put("uservisits/bad.csv.gz", b"\x1f\x8b\x08\x00 this is not really gzip")

    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(good, bad)).payload
    reduce(lambdas)

    assert {(o["key"], o["outcome"]) for o in outcomes if o["job"] == "bdb-agg-2a"} == {
        ("uservisits/good.csv", "mapped"), ("uservisits/bad.csv.gz", "quarantined")}
    assert results(lambdas, "bdb-agg-2a") == EXPECTED_2A
    report = status(lambdas, "bdb-agg-2a")
    assert report["idle"] is True
    assert report["objects"]["quarantined"] == 1
    [entry] = report["quarantined"]
    assert entry["key"] == "uservisits/bad.csv.gz" and entry["reason"] and entry["offset"] is not None


def test_replacing_a_quarantined_file_with_a_good_one_clears_it(lambdas, uploads):
    bad = uploads.put("uservisits/x.csv", "not,a,valid,row\n")
    lambdas.lambda_.invoke("map_object", uploads.event(bad))
    assert status(lambdas, "bdb-agg-2a")["objects"]["quarantined"] == 1

    good = uploads.put("uservisits/x.csv", CSV)
    lambdas.lambda_.invoke("map_object", uploads.event(good))
    reduce(lambdas)

    report = status(lambdas, "bdb-agg-2a")
    assert report["objects"]["quarantined"] == 0 and report["quarantined"] == []
    assert report["idle"] is True
    assert results(lambdas, "bdb-agg-2a") == EXPECTED_2A


def test_malformed_rows_inside_a_good_file_are_skipped_and_counted(lambdas, uploads):
    record = uploads.put("uservisits/mixed.csv", CSV + "only,three,columns\n")
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    reduce(lambdas)

    assert results(lambdas, "bdb-agg-2a") == EXPECTED_2A
    assert status(lambdas, "bdb-agg-2a")["bad_rows_skipped"] == 1


def test_objects_outside_every_prefix_and_stale_events_write_nothing(lambdas, runtime, uploads, s3):
    elsewhere = uploads.put("other/file.csv", CSV)
    old = uploads.put("uservisits/y.csv", CSV)
    uploads.put("uservisits/y.csv", uservisits_rows(("9.9.9.9", "9")))  # overwritten before its event is handled

    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(elsewhere, old)).payload

    assert {o["outcome"] for o in outcomes} == {"superseded"}
    assert inbox(runtime, "bdb-agg-2a") == []
    assert s3.list_objects_v2(Bucket=STATE, Prefix="jobs/bdb-agg-2a/quarantine/")["KeyCount"] == 0


def test_empty_object_maps_to_an_empty_partial(lambdas, uploads):
    record = uploads.put("uservisits/empty.csv.gz", b"")
    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(record)).payload
    reduce(lambdas)

    assert {(o["outcome"], o["rows"]) for o in outcomes} == {("mapped", 0)}
    assert status(lambdas, "bdb-agg-2a")["idle"] is True


def test_a_file_found_bad_after_parts_were_spilled_leaves_no_parts_behind(lambdas, runtime, uploads, monkeypatch):
    runtime.mapper.max_groups, runtime.mapper.block_size = 64, 4096
    good = [(f"{i % 250}.{i % 7}.{i % 3}.1", "1") for i in range(5000)]
    # Cut off before its end: the rows come out until the stream is found truncated, parts spilled by then.
    body = gzip.compress(uservisits_rows(*good).encode())[:-12]
    record = uploads.put("uservisits/late-error.csv.gz", body)
    written, put = [], runtime.state_store.put
    monkeypatch.setattr(runtime.state_store, "put", lambda key, *a, **kw: (written.append(key), put(key, *a, **kw)))

    outcomes = lambdas.lambda_.invoke("map_object", uploads.event(record)).payload

    assert any(key.startswith(layout.parts_prefix("bdb-agg-2a")) for key in written)
    assert {o["outcome"] for o in outcomes} == {"quarantined"}
    assert inbox(runtime, "bdb-agg-2a") == []
    assert list(runtime.state_store.list(layout.parts_prefix("bdb-agg-2a"))) == []
    [entry] = status(lambdas, "bdb-agg-2a")["quarantined"]
    assert "runcated" in entry["reason"]


def parts_of(runtime, job: str) -> list:
    [key] = inbox(runtime, job)
    marker = json.loads(runtime.state_store.get(key)[0])
    fingerprint = runtime.jobs.get(job).plan.fingerprint
    return [decode(runtime.state_store.get(part)[0], fingerprint)[0] for part in marker["parts"]]


def test_nearly_distinct_keys_are_not_pre_aggregated_and_the_result_is_the_same(lambdas, runtime, uploads):
    """2c's keys (12 characters of the IP) all differ here: after the first rows the mapper states the rest
    row by row, in parts of at most its group budget, and the reducer's merge makes them the same groups."""
    runtime.mapper.max_groups, runtime.mapper.block_size, runtime.mapper.inline_limit = 40, 512, 0
    rows = [(f"10.100.{i % 5}.{i}", f"{i % 9}.5") for i in range(300)] + [("10.100.0.0", "1")]
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("uservisits/distinct.csv", uservisits_rows(*rows))))

    by_row, pre_aggregated = parts_of(runtime, "bdb-agg-2c"), parts_of(runtime, "bdb-agg-2a")
    assert sum(p.num_rows for p in by_row) == len(rows)  # "10.100.0.0" is there twice: stated, not grouped
    assert max(p.num_rows for p in by_row) <= 40 + 8  # the budget, and a 512-byte block's rows past it
    assert sum(p.num_rows for p in pre_aggregated) == 5  # 2a's keys ("10.100.0" to "10.100.4"): grouped as ever
    reduce(lambdas)
    expected: dict = {}
    for ip, revenue in rows:
        expected[ip[:12]] = expected.get(ip[:12], Decimal(0)) + Decimal(revenue)
    assert results(lambdas, "bdb-agg-2c") == {(k,): {"adRevenue": v} for k, v in expected.items()}


def test_repeating_keys_within_the_budget_are_aggregated_in_one_pass(runtime, monkeypatch):
    """Deciding whether to pre-aggregate counts the first rows' keys; it does not aggregate them apart from the
    rest, which would take a second hash aggregation and a merge (2a: a fifth of the kernel's time)."""
    plan = runtime.jobs.get("bdb-agg-2a").plan
    lifted, spilled = [], []
    lift = type(plan).lift
    monkeypatch.setattr(type(plan), "lift", lambda self, table: lifted.append(table.num_rows) or lift(self, table))
    monkeypatch.setattr("chalicelib.engine.mapper.SAMPLE_ROWS", 200)
    accumulator = PartialAccumulator(plan, max_groups=1000, spill=spilled.append)
    for start in range(0, 1000, 100):
        accumulator.add(pa.record_batch({
            "sourceIP": [f"10.0.0.{i % 10}" for i in range(start, start + 100)],
            "adRevenue": pa.array([Decimal(i) for i in range(start, start + 100)], pa.decimal128(18, 6))}))

    partial = accumulator.result()
    assert lifted == [1000] and spilled == []
    assert sorted(zip(*(partial[c].to_pylist() for c in ("sourceIP_prefix", "adRevenue", "__rows")))) == [
        (f"10.0.0.{d}", sum(Decimal(i) for i in range(d, 1000, 10)), 100) for d in range(10)]


# --- overwrites and deletes: the result is the query over the objects in the bucket now ------------------

def map_and_reduce(lambdas, uploads, *records) -> None:
    lambdas.lambda_.invoke("map_object", uploads.event(*records))
    reduce(lambdas)


def test_an_overwrite_replaces_the_old_contribution(lambdas, uploads):
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/a.csv", CSV))
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/a.csv", uservisits_rows(("10.0.0.1", "1"))))

    assert results(lambdas, "bdb-agg-2a") == {("10.0.0.1",): {"adRevenue": Decimal("1")}}
    assert status(lambdas, "bdb-agg-2a")["idle"] is True


def test_a_late_event_for_an_overwritten_version_does_not_win(lambdas, uploads):
    old = uploads.put("uservisits/a.csv", CSV)
    lambdas.lambda_.invoke("map_object", uploads.event(old))  # mapped, not yet reduced
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/a.csv", uservisits_rows(("10.0.0.1", "1"))))
    map_and_reduce(lambdas, uploads, old)  # the old version's event again, late

    assert results(lambdas, "bdb-agg-2a") == {("10.0.0.1",): {"adRevenue": Decimal("1")}}


def test_a_deleted_object_is_retracted_and_its_groups_disappear(lambdas, runtime, uploads):
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/a.csv", CSV),
                   uploads.put("uservisits/b.csv", uservisits_rows(("10.0.0.1", "5"))))
    map_and_reduce(lambdas, uploads, uploads.delete("uservisits/a.csv"))

    assert results(lambdas, "bdb-agg-2a") == {("10.0.0.1",): {"adRevenue": Decimal("5")}}
    assert status(lambdas, "bdb-agg-2a")["idle"] is True
    assert retained(runtime, "bdb-agg-2a") == {"10.0.0.1": Decimal("5")}  # only b.csv's partial is kept


def retained(runtime, job: str) -> dict:
    """What the reducer would rebuild the result from: the retained partials of every live version."""
    manifest, _ = runtime.reducer.read_manifest(runtime.jobs.get(job))
    entries = runtime.reducer.read_ledger(manifest).to_pylist()
    tables = runtime.reducer.read_retained(runtime.jobs.get(job), entries)
    return {k: v for t in tables for k, v in zip(t.column(0).to_pylist(), t.column(1).to_pylist())}


def test_small_partials_are_kept_in_a_pack_until_no_live_version_needs_it(lambdas, runtime, uploads):
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/a.csv", CSV),
                   uploads.put("uservisits/b.csv", uservisits_rows(("10.0.0.1", "5"))))
    [pack] = [o.key for o in runtime.state_store.list(layout.packs_prefix("bdb-agg-2a"))]
    map_and_reduce(lambdas, uploads, uploads.delete("uservisits/a.csv"))
    assert [o.key for o in runtime.state_store.list(layout.packs_prefix("bdb-agg-2a"))] == [pack]  # b needs it

    map_and_reduce(lambdas, uploads, uploads.put("uservisits/b.csv", uservisits_rows(("10.0.0.9", "7"))))
    collect_garbage(runtime, "bdb-agg-2a")  # once no run can still read the old pack

    [newer] = [o.key for o in runtime.state_store.list(layout.packs_prefix("bdb-agg-2a"))]
    assert newer != pack
    assert retained(runtime, "bdb-agg-2a") == {"10.0.0.9": Decimal("7")}
    assert results(lambdas, "bdb-agg-2a") == {("10.0.0.9",): {"adRevenue": Decimal("7")}}


def test_a_removal_handled_before_the_creation_event_leaves_nothing(lambdas, uploads):
    created = uploads.put("uservisits/a.csv", CSV)
    removal = uploads.delete("uservisits/a.csv")
    map_and_reduce(lambdas, uploads, removal)
    map_and_reduce(lambdas, uploads, created)

    assert results(lambdas, "bdb-agg-2a") == {}
    assert status(lambdas, "bdb-agg-2a")["idle"] is True


def test_max_is_rebuilt_from_retained_partials_when_an_object_goes(lambdas, uploads):
    def request(path: str, latency: float) -> str:
        return json.dumps({"ts": "2026-01-01 00:00:00", "method": "GET", "path": path, "status": 200,
                           "latency_ms": latency, "bytes": 1}) + "\n"

    map_and_reduce(lambdas, uploads, uploads.put("requests/a.jsonl", request("/", 900.0)),
                   uploads.put("requests/b.jsonl", request("/", 10.0) + request("/x", 1.0)))
    assert results(lambdas, "page-latency")[("/", "GET")]["max_latency_ms"] == 900.0

    map_and_reduce(lambdas, uploads, uploads.delete("requests/a.jsonl"))

    assert results(lambdas, "page-latency") == {
        ("/", "GET"): {"requests": 1, "mean_latency_ms": 10.0, "max_latency_ms": 10.0, "bytes": 1},
        ("/x", "GET"): {"requests": 1, "mean_latency_ms": 1.0, "max_latency_ms": 1.0, "bytes": 1},
    }


def test_a_row_longer_than_the_read_block_is_read_again_with_bigger_blocks(lambdas, runtime, uploads):
    runtime.mapper.block_size = 1024
    long_url = "http://example.com/" + "x" * 50_000
    rows = uservisits_rows(("1.1.1.1", "1")) + f"2.2.2.2,{long_url},2001-02-03,2,UA,USA,USA-EN,w,1\n"
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/long.csv", rows))

    assert results(lambdas, "bdb-agg-2a") == {("1.1.1.1",): {"adRevenue": Decimal("1")},
                                              ("2.2.2.2",): {"adRevenue": Decimal("2")}}


def record_reads(runtime) -> list:
    """The byte range of every read of the input bucket from now on (None: a whole-object GET)."""
    fetch, ranges = runtime.input_store.open, []

    def open_recording_ranges(key, **kwargs):
        ranges.append(kwargs.get("byte_range"))
        return fetch(key, **kwargs)

    runtime.input_store.open = open_recording_ranges
    return ranges


def test_a_big_object_is_read_by_several_ranged_gets_with_the_same_result(lambdas, runtime, uploads):
    runtime.mapper.prefetch_chunk = 1000  # the object is ~30 chunks: ~30 ranged GETs, a few in flight at a time
    rows = [(f"158.{i % 7}.{i % 13}.{i}", f"{i}.{i % 1000:06d}") for i in range(300)]
    body = uservisits_rows(*rows)
    ranges = record_reads(runtime)
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/big.csv", body))

    # One GET for the first chunk, then ranged GETs that tile the rest of the object.
    assert ranges[0] is None and sorted(ranges[1:])[0][0] == 1000 and sorted(ranges[1:])[-1][1] == len(body)
    assert len(ranges) == -(-len(body) // 1000)

    expected: dict = {}
    for ip, revenue in rows:
        expected[(ip[:8],)] = expected.get((ip[:8],), Decimal(0)) + Decimal(revenue)
    assert results(lambdas, "bdb-agg-2a") == {key: {"adRevenue": value} for key, value in expected.items()}
    assert status(lambdas, "bdb-agg-2a")["objects"]["merged"] == 1


def test_an_overwrite_while_ranged_gets_are_in_flight_maps_neither_version_half(lambdas, runtime, uploads, s3):
    runtime.mapper.prefetch_chunk = 1000
    old = uploads.put("uservisits/big.csv", uservisits_rows(*[(f"1.1.1.{i}", "1") for i in range(300)]))
    fetch = runtime.input_store.open

    def overwrite_after_the_first_range(key, **kwargs):
        if kwargs.get("byte_range") and kwargs["byte_range"][0] >= 3000:
            uploads.put("uservisits/big.csv", uservisits_rows(("2.2.2.2", "5")))
        return fetch(key, **kwargs)

    runtime.input_store.open = overwrite_after_the_first_range
    outcomes = runtime.mapper.handle(uploads.event(old))
    runtime.input_store.open = fetch

    assert {o.outcome for o in outcomes} == {"superseded"}
    assert inbox(runtime, "bdb-agg-2a") == [] and list(runtime.state_store.list(layout.parts_prefix("bdb-agg-2a"))) == []


def test_one_read_stream_reads_a_big_object_with_its_one_get(lambdas, runtime, uploads):
    # Local mode's setting: loopback S3 has no per-stream limit to work around.
    runtime.mapper.prefetch_chunk, runtime.mapper.read_streams = 1000, 1
    ranges = record_reads(runtime)
    map_and_reduce(lambdas, uploads, uploads.put("uservisits/big.csv", CSV * 100))

    assert ranges == [None]
    assert results(lambdas, "bdb-agg-2a") == {key: {"adRevenue": value["adRevenue"] * 100}
                                              for key, value in EXPECTED_2A.items()}
