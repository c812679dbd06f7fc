"""The `tally` command against a running HTTP API and S3 endpoint: tables a person reads, JSON a script reads,
and exit codes a script can rely on (0 ok, 1 failed, 2 bad usage, 3 unreachable)."""
from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chalicelib.local.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from chalicelib.local.client import TallyClient, signer_for

from .conftest import INPUT, STATE, free_port, http_api, scheduled_event, uservisits_rows

IPS = [("1.2.3.4", "10.5"), ("1.2.3.5", "1.25"), ("9.8.7.6", "100"), ("5.5.5.5", "3")]


@pytest.fixture
def api_url(lambdas, uploads):
    """The Chalice app's routes over real HTTP (the same server as local mode's) with one merged object."""
    record = uploads.put("uservisits/a.csv", uservisits_rows(*IPS))
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    with http_api() as url:
        yield url


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich folds table cells to the terminal's width


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_jobs_lists_every_job(api_url, capsys):
    code, out = run(capsys, "jobs", "--api", api_url)
    assert code == EXIT_OK
    for name in ("bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c", "page-latency"):
        assert name in out
    assert "substr(sourceIP, 1, 8)" in out


def test_status_is_a_table_of_every_job(api_url, capsys):
    code, out = run(capsys, "status", "--api", api_url)
    assert code == EXIT_OK
    line = next(line for line in out.splitlines() if "bdb-agg-2a" in line)
    assert "idle" in line and "1/1" in line
    assert "page-latency" in out


def test_status_of_one_job_as_json_for_scripts(api_url, capsys):
    code, out = run(capsys, "status", "bdb-agg-2c", "--api", api_url, "--json")
    assert code == EXIT_OK
    [status] = json.loads(out)
    assert status["job"] == "bdb-agg-2c" and status["idle"] is True and status["rows"] == 4


def test_query_shows_the_top_groups_by_the_first_aggregate(api_url, capsys):
    code, out = run(capsys, "query", "bdb-agg-2c", "--top", "2", "--api", api_url)
    assert code == EXIT_OK
    rows = [line for line in out.splitlines() if any(ip[:12] in line for ip, _ in IPS)]
    assert len(rows) == 2 and "9.8.7.6" in rows[0] and "1.2.3.4" in rows[1]
    assert "top 2 of 4 groups by" in out  # ordered by the first aggregate, adRevenue


def test_query_of_a_scan_job_shows_its_output_rows_and_refuses_ordering(api_url, lambdas, uploads, capsys):
    from .conftest import rankings_rows

    record = uploads.put("rankings/a.csv", rankings_rows(("a.com", 5), ("b.com", 5000), ("c.com", 2000)))
    lambdas.lambda_.invoke("map_object", uploads.event(record))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    code, out = run(capsys, "query", "bdb-scan-1a", "--api", api_url)
    assert code == EXIT_OK
    assert "b.com" in out and "c.com" in out and "a.com" not in out and "2 output rows" in out
    code, out = run(capsys, "jobs", "--api", api_url)
    assert code == EXIT_OK and "pageRank > 1000" in out
    code, out = run(capsys, "query", "bdb-scan-1a", "--asc", "--api", api_url)
    assert code == EXIT_FAILED and "scan job" in out


def test_query_json_ascending_and_ordered_by_a_key(api_url, capsys):
    code, out = run(capsys, "query", "bdb-agg-2c", "--order-by", "sourceIP_prefix", "--asc", "--json",
                    "--api", api_url)
    assert code == EXIT_OK
    page = json.loads(out)
    assert [r["key"]["sourceIP_prefix"] for r in page["rows"]] == sorted(ip[:12] for ip, _ in IPS)
    assert {Decimal(str(r["values"]["adRevenue"])) for r in page["rows"]} == {Decimal(v) for _, v in IPS}


@pytest.mark.parametrize("argv, message", [
    (["status", "nope"], "no job named 'nope'"),
    (["query", "nope"], "no job named 'nope'"),
    (["query", "bdb-agg-2a", "--order-by", "colour"], "order_by must be one of"),
])
def test_api_errors_are_one_readable_line_and_exit_1(api_url, capsys, argv, message):
    code, out = run(capsys, *argv, "--api", api_url)
    assert code == EXIT_FAILED
    assert message in out and "Traceback" not in out


def test_nothing_listening_exits_3_with_a_hint(capsys):
    code, out = run(capsys, "status", "--api", f"http://127.0.0.1:{free_port()}")
    assert code == EXIT_UNREACHABLE and "nothing answers" in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["query"])
    assert exit_.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_:
        main(["query", "bdb-agg-2a", "--top", "0"])
    assert exit_.value.code == EXIT_USAGE


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 - BaseHTTPRequestHandler's name
        _Recorder.seen.append({name.lower(): value for name, value in self.headers.items()})
        body = b'{"jobs": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_api_key_is_sent_as_x_api_key(capsys):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, _ = run(capsys, "jobs", "--api", f"http://127.0.0.1:{server.server_port}", "--api-key", "k-123")
    finally:
        server.shutdown()
    assert code == EXIT_OK
    assert _Recorder.seen[-1]["x-api-key"] == "k-123"


def test_execute_api_urls_are_signed_with_sigv4_for_their_region():
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/jobs"
    headers = signer_for(url)("GET", url)  # credentials from the environment (conftest: "testing")
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    assert headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=testing/{today}/eu-west-1/execute-api/aws4_request")
    assert "X-Amz-Date" in headers
    assert signer_for("http://127.0.0.1:8000") is None  # local mode's API is open


def test_create_buckets_makes_a_stages_buckets_once(s3_server, capsys, tmp_path):
    endpoint = s3_server.meta.endpoint_url
    code, out = run(capsys, "create-buckets", "--stage", "dev", "--endpoint-url", endpoint)
    assert code == EXIT_OK and "tally-input-dev: created" in out and "tally-state-dev: created" in out
    names = {b["Name"] for b in s3_server.list_buckets()["Buckets"]}
    assert {"tally-input-dev", "tally-state-dev", INPUT, STATE} <= names
    code, out = run(capsys, "create-buckets", "--stage", "dev", "--endpoint-url", endpoint)
    assert code == EXIT_OK and "tally-input-dev: exists" in out  # idempotent


def test_create_buckets_refuses_an_unknown_stage_by_name(capsys):
    code, out = run(capsys, "create-buckets", "--stage", "staging")
    assert code == EXIT_FAILED and "no stage 'staging'" in out and "dev, prod" in out


def test_backfill_with_nothing_listening_exits_3(capsys):
    code, out = run(capsys, "backfill", "bdb-agg-2a", "--s3-endpoint", f"http://127.0.0.1:{free_port()}")
    assert code == EXIT_UNREACHABLE and "is `tally local` running?" in out


def test_client_pages_through_signed_requests(api_url):
    seen = []
    client = TallyClient(api_url, signer=lambda method, url: seen.append(url) or {"x-api-key": "k"})
    assert len(list(client.results("bdb-agg-2c", page_size=3))) == 4
    assert len(seen) == 2
