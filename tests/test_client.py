"""The Python client (tally/) and the commands built on it, against the Chalice app over real HTTP on moto's
server: every row through the cursors, typed as the Parquet export, exact decimals; single groups, fresh rows,
window bounds; requests signed for AWS_IAM stages; the API's URL found without pasting it; `tally query --all`
and `tally export`."""
from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from chalicelib.local.cli import EXIT_FAILED, EXIT_OK, main
from tally import ApiError, NotDeployed, Tally
from tally.endpoint import LOCAL_API, resolve_url

from .conftest import http_api, scheduled_event

GROUPS = 1500  # bdb-agg-2c's groups: more than one page of the API's largest (1000)


def uservisits(n: int, offset: int = 0, day: int = 1, country: str = "USA") -> str:
    """n rows, each its own 12-character sourceIP prefix; revenue with six decimals; words and durations vary."""
    words = ["tea", "ski", "sun", "jam", "owl"]
    return "".join(
        f"{(i + offset) // 250 + 100}.{(i + offset) % 250 + 1:03d}.1.1,http://x/{i},2001-02-0{day},"
        f"{i % 97}.{i * 7919 % 10**6:06d},Mozilla/5.0,{country},EN,{words[i * i % 5]},{i % 130}\n"
        for i in range(n))


@pytest.fixture
def api_url(s3_server, lambdas, uploads):
    """The app's routes over HTTP with bdb-agg-2c at GROUPS groups and revenue-by-day over two days."""
    for key, body in (("uservisits/a.csv", uservisits(GROUPS)),
                      ("uservisits/b.csv", uservisits(40, offset=GROUPS, day=2, country="DEU"))):
        lambdas.lambda_.invoke("map_object", uploads.event(uploads.put(key, body)))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    with http_api() as url:
        yield url


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("TALLY_API", raising=False)


def counting(api_url: str) -> tuple[Tally, list[str]]:
    seen: list[str] = []
    return Tally(api_url, signer=lambda method, url: seen.append(url) or {}), seen


def test_results_follow_the_cursors_to_every_row_exactly_once_in_order(api_url):
    api, seen = counting(api_url)
    rows = list(api.results("bdb-agg-2c", page_size=7, order_by="adRevenue", desc=True))
    keys = [row["key"]["sourceIP_prefix"] for row in rows]
    assert len(keys) == len(set(keys)) == GROUPS + 40
    assert len([url for url in seen if "/results" in url]) == -(-len(keys) // 7)
    revenue = [row["values"]["adRevenue"] for row in rows]
    assert revenue == sorted(revenue, reverse=True) and all(isinstance(v, Decimal) for v in revenue)
    assert str(revenue[0]).split(".")[1].__len__() == 6  # every digit the API wrote, none lost to a float
    assert [r["key"] for r in api.results("bdb-agg-2c")] == sorted(({"sourceIP_prefix": k} for k in keys),
                                                                   key=lambda k: k["sourceIP_prefix"])


def test_to_arrow_is_typed_and_equal_to_the_parquet_export(api_url, tmp_path):
    api = Tally(api_url)
    for job in ("revenue-by-day", "visits-by-country", "duration-histogram", "bdb-agg-2c"):
        table = api.results(job, page_size=500).to_arrow()
        answer = api.download(job, "parquet", tmp_path / f"{job}.parquet")
        exported = pq.read_table(answer["path"])
        assert table.schema == exported.schema, job
        assert table.equals(exported), job
        assert answer["rows"] == table.num_rows > 0
    assert str(api.results("revenue-by-day").to_arrow().schema) == (
        "window_start: date32[day]\ncountryCode: string\nrevenue: decimal128(38, 6)")
    top = api.results("visits-by-country").to_arrow().column("top_words").to_pylist()[0]
    assert top and set(top[0]) == {"value", "count"} and isinstance(top[0]["count"], int)


def test_to_pandas_keeps_exact_decimals_and_says_what_is_missing_without_pandas(api_url, monkeypatch):
    api = Tally(api_url)
    frame = api.results("revenue-by-day").to_pandas()
    assert list(frame.columns) == ["window_start", "countryCode", "revenue"] and len(frame) == 2
    served = {r["key"]["countryCode"]: r["values"]["revenue"] for r in api.results("revenue-by-day")}
    assert dict(zip(frame["countryCode"], frame["revenue"])) == served
    assert all(isinstance(v, Decimal) for v in frame["revenue"])
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="to_pandas\\(\\) needs pandas: pip install pandas"):
        api.results("revenue-by-day").to_pandas()


def test_group_by_one_key_or_several_and_an_unknown_one_is_an_api_error(api_url):
    api = Tally(api_url)
    first = next(iter(api.results("bdb-agg-2c")))
    assert api.group("bdb-agg-2c", first["key"]["sourceIP_prefix"]) == first
    day = api.group("revenue-by-day", [dt.date(2001, 2, 2), "DEU"])
    assert day["key"] == {"window_start": "2001-02-02", "countryCode": "DEU"}
    assert isinstance(day["values"]["revenue"], Decimal)
    with pytest.raises(ApiError) as missing:
        api.group("bdb-agg-2c", "no.such.key")
    assert missing.value.status == 404


def test_fresh_rows_include_what_is_mapped_but_not_yet_merged(api_url, lambdas, uploads):
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("uservisits/c.csv", uservisits(
        3, offset=5000, day=3, country="FRA"))))
    api = Tally(api_url)
    assert {r["key"]["countryCode"] for r in api.results("revenue-by-day")} == {"USA", "DEU"}
    assert {r["key"]["countryCode"] for r in api.results("revenue-by-day", fresh=True)} == {"USA", "DEU", "FRA"}
    assert api.group("revenue-by-day", ["2001-02-03", "FRA"], fresh=True)["key"]["countryCode"] == "FRA"


def test_window_bounds_take_dates_or_text(api_url):
    api = Tally(api_url)
    assert [r["key"]["window_start"] for r in api.results("revenue-by-day", window_from=dt.date(2001, 2, 2))] \
        == ["2001-02-02"]
    assert [r["key"]["window_start"] for r in api.results("revenue-by-day", window_to="2001-02-02")] \
        == ["2001-02-01"]


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 - BaseHTTPRequestHandler's name
        _Recorder.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        body = b'{"jobs": [], "x": 0.1000000000000000055511151231257827}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_iam_stages_get_sigv4_signed_requests_and_api_key_stages_the_key(recorder, monkeypatch):
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    execute_api = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"
    headers = Tally(execute_api).signer("GET", execute_api + "jobs")  # auto: iam for execute-api; no network
    assert headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=testing/{today}/eu-west-1/execute-api/aws4_request")
    assert Tally(LOCAL_API).signer is None

    answer = Tally(recorder, auth="iam", region="eu-west-1").get("/jobs")  # credentials: conftest's "testing"
    sent = _Recorder.seen[-1]
    assert sent["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential=testing/{today}/eu-west-1/execute-api/")
    assert "x-amz-date" in sent
    assert answer["x"] == Decimal("0.1000000000000000055511151231257827")  # numbers are read exactly
    monkeypatch.setenv("TALLY_API_KEY", "k-9")
    Tally(recorder).jobs()
    assert _Recorder.seen[-1]["x-api-key"] == "k-9" and "authorization" not in _Recorder.seen[-1]


def deployed(project: Path, stage: str, url: str) -> None:
    """What `chalice deploy` records (schema 2.0), trimmed to what `chalice url` reads."""
    (project / ".chalice" / "deployed").mkdir(parents=True, exist_ok=True)
    (project / ".chalice" / "deployed" / f"{stage}.json").write_text(json.dumps({
        "schema_version": "2.0", "backend": "api", "stage": stage,
        "resources": [{"name": "api_handler_role", "resource_type": "iam_role"},
                      {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123",
                       "rest_api_url": url}]}))


def test_the_api_url_is_the_flag_then_tally_api_then_the_deployed_stage_then_local_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deployed(tmp_path, "dev", "https://abc123.execute-api.eu-west-1.amazonaws.com/api/")
    assert resolve_url() == LOCAL_API
    assert resolve_url(stage="dev") == "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"
    monkeypatch.setenv("TALLY_API", "http://from-env:1")
    assert resolve_url(stage="dev") == resolve_url() == "http://from-env:1"
    assert resolve_url("http://flag:2", stage="dev") == "http://flag:2"
    monkeypatch.delenv("TALLY_API")
    with pytest.raises(NotDeployed, match="'prod' has no deployed API"):
        resolve_url(stage="prod")
    assert Tally(stage="dev").url == "https://abc123.execute-api.eu-west-1.amazonaws.com/api"


def test_every_api_command_finds_the_url_the_same_way(api_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    deployed(tmp_path, "dev", api_url + "/")
    for argv in (["jobs"], ["status", "bdb-agg-2a"], ["query", "bdb-agg-2a"], ["export", "bdb-agg-2a"]):
        assert main([*argv, "--stage", "dev", "--json"]) == EXIT_OK, argv
        capsys.readouterr()
        monkeypatch.setenv("TALLY_API", api_url)
        assert main([*argv, "--stage", "nowhere", "--json"]) == EXIT_OK, argv  # $TALLY_API before --stage
        monkeypatch.delenv("TALLY_API")
        capsys.readouterr()
    assert main(["jobs", "--stage", "prod"]) == EXIT_FAILED
    assert "'prod' has no deployed API" in capsys.readouterr().out


def test_query_all_as_csv_prints_every_row_as_the_export_writes_them(api_url, capsys, tmp_path):
    assert main(["query", "bdb-agg-2c", "--all", "--output", "csv", "--api", api_url]) == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "sourceIP_prefix,adRevenue" and len(lines) == 1 + GROUPS + 40
    assert len({line.split(",")[0] for line in lines[1:]}) == GROUPS + 40
    served = {r["key"]["sourceIP_prefix"]: r["values"]["adRevenue"] for r in Tally(api_url).results("bdb-agg-2c")}
    assert {k: Decimal(v) for k, v in (line.split(",") for line in lines[1:])} == served
    # The same bytes as the export's CSV, nested values and floats included, in the export's (key) order.
    for job, key in (("visits-by-country", "countryCode"), ("revenue-by-day", "window_start"),
                     ("duration-histogram", "languageCode")):
        assert main(["query", job, "--all", "--output", "csv", "--order-by", key, "--asc", "--api", api_url]) == 0
        printed = capsys.readouterr().out
        assert main(["export", job, "--format", "csv", "-o", str(tmp_path / f"{job}.csv"), "--api", api_url]) == 0
        capsys.readouterr()
        assert printed == (tmp_path / f"{job}.csv").read_text(), job


def test_query_top_n_stays_the_default_and_json_keeps_every_digit(api_url, capsys):
    assert main(["query", "bdb-agg-2c", "--top", "3", "--api", api_url]) == EXIT_OK
    out = capsys.readouterr().out
    assert "top 3 of 1,540 groups by adRevenue" in " ".join(out.split())  # the title wraps to the table
    assert main(["query", "bdb-agg-2c", "--all", "--output", "json", "--api", api_url]) == EXIT_OK
    body = json.loads(capsys.readouterr().out, parse_float=Decimal)
    assert body["total_rows"] == len(body["rows"]) == GROUPS + 40
    assert all(isinstance(r["values"]["adRevenue"], Decimal) for r in body["rows"])


def test_export_saves_a_file_duckdb_reads_or_prints_its_url(api_url, capsys, tmp_path):
    target = tmp_path / "2c.parquet"
    assert main(["export", "bdb-agg-2c", "--format", "parquet", "-o", str(target), "--api", api_url]) == EXIT_OK
    assert f"wrote {target}: 1,540 rows of bdb-agg-2c (generation 1, parquet" in capsys.readouterr().out
    assert duckdb.read_parquet(str(target)).aggregate("count(*), sum(adRevenue)").fetchall()[0] == (
        GROUPS + 40, sum(r["values"]["adRevenue"] for r in Tally(api_url).results("bdb-agg-2c")))
    assert main(["export", "bdb-agg-2c", "--format", "csv", "--api", api_url, "--json"]) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["format"] == "csv" and answer["rows"] == GROUPS + 40 and answer["url"].startswith("http://")
    assert main(["export", "nope", "--api", api_url]) == EXIT_FAILED
    assert not list(tmp_path.glob(".*"))  # nothing half-written left behind


def test_an_unknown_job_is_an_api_error_for_arrow_too(api_url):
    with pytest.raises(ApiError, match="no job named 'nope'"):
        Tally(api_url).results("nope").to_arrow()


def test_a_scan_jobs_rows_are_its_columns_in_arrow_and_in_csv(api_url, lambdas, uploads, capsys, tmp_path):
    from .conftest import rankings_rows

    ranks = [(f"p{i}.com", 1000 + i) for i in range(1, 30)]
    lambdas.lambda_.invoke("map_object", uploads.event(uploads.put("rankings/a.csv", rankings_rows(*ranks))))
    lambdas.lambda_.invoke("reduce_results", scheduled_event())
    api = Tally(api_url)
    table = api.results("bdb-scan-1a", page_size=4).to_arrow()
    assert table.column_names == ["pageURL", "pageRank"] and str(table.schema.field("pageRank").type) == "int64"
    assert sorted(zip(*table.to_pydict().values())) == sorted(ranks)
    assert table.equals(pq.read_table(api.download("bdb-scan-1a", "parquet", tmp_path / "1a.parquet")["path"]))
    capsys.readouterr()  # the handlers' metrics
    assert main(["query", "bdb-scan-1a", "--all", "--output", "csv", "--api", api_url]) == EXIT_OK
    printed = capsys.readouterr().out
    api.download("bdb-scan-1a", "csv", tmp_path / "1a.csv")
    assert printed == (tmp_path / "1a.csv").read_text() and len(printed.splitlines()) == 1 + len(ranks)
