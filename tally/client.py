"""`Tally`: the HTTP API from Python, for scripts, notebooks, the `tally` command and the demo.

    api = Tally()                      # $TALLY_API, else local mode's API
    api = Tally(stage="dev")           # the deployed stage's URL (.chalice/deployed/dev.json), SigV4-signed
    for row in api.results("bdb-agg-2a", order_by="adRevenue", desc=True):   # every row, page after page
        ...
    table = api.results("visits-by-country").to_arrow()   # typed as the Parquet export is
    api.download("bdb-agg-2a", "parquet", "2a.parquet")    # the generation's export file

Exact decimals stay exact: numbers with a fraction are read as Decimal.
"""
from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from . import rows as _rows
from .endpoint import resolve_url
from .transport import ApiError, Signer, download, get_json, request_json, signer_for

MAX_PAGE = 1000  # the API's cap on limit


class Tally:
    def __init__(self, url: str | None = None, *, stage: str | None = None, auth: str = "auto",
                 api_key: str | None = None, region: str | None = None, timeout: float = 30.0,
                 signer: Signer | None = None, session=None, project_dir: str | Path | None = None):
        """`url`: the API; else $TALLY_API, else `stage`'s deployed URL, else local mode's. `auth`: auto (an API
        key if one is given, SigV4 for an execute-api URL, else none), iam, api_key or none; `api_key`
        defaults to $TALLY_API_KEY. `signer` replaces them (a function (method, url) -> headers)."""
        self.url = resolve_url(url, stage, project_dir=project_dir).rstrip("/")
        api_key = api_key or os.environ.get("TALLY_API_KEY")
        self.signer = signer or signer_for(self.url, auth, api_key, region, session)
        self.timeout = timeout
        self._definitions: dict[str, dict] = {}

    def __repr__(self) -> str:
        return f"Tally({self.url!r})"

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: _param(v) for k, v in params.items() if v is not None})
        return get_json(f"{self.url}{path}" + (f"?{query}" if query else ""), self.signer, self.timeout)

    def jobs(self) -> list[dict]:
        """Every job's definition (kind, keys and aggregates or select, result columns)."""
        listed = self.get("/jobs")["jobs"]
        self._definitions = {job["name"]: job for job in listed}
        return listed

    def definition(self, job: str) -> dict:
        if job not in self._definitions:
            self.jobs()
        if job not in self._definitions:
            raise ApiError(404, {"error": "JobNotFound", "message": f"no job named {job!r}"})
        return self._definitions[job]

    def create_view(self, name: str, sql: str) -> dict:
        """A view: a job defined by one SQL statement, created on the running service; its description."""
        self._definitions.clear()
        return request_json("POST", f"{self.url}/jobs", self.signer, self.timeout, {"name": name, "sql": sql})

    def drop_view(self, name: str) -> dict:
        """Drops a view created at run time (not a job defined in code); its state goes an hour later."""
        self._definitions.clear()
        return request_json("DELETE", f"{self.url}/jobs/{_quote(name)}", self.signer, self.timeout)

    def status(self, job: str) -> dict:
        return self.get(f"/jobs/{_quote(job)}/status")

    def page(self, job: str, **params: Any) -> dict:
        """One page of /results as the API returns it (rows, next_cursor, total_rows, generation)."""
        return self.get(f"/jobs/{_quote(job)}/results", **params)

    def results(self, job: str, order_by: str | None = None, desc: bool = False, prefix: str | None = None,
                fresh: bool = False, window_from: str | dt.date | None = None,
                window_to: str | dt.date | None = None, *, page_size: int = MAX_PAGE) -> "Results":
        """Every row of the job's result, in order, following the API's cursors; iterate it, or take it whole
        with to_arrow() / to_pandas(). Aggregation rows are {"key": {...}, "values": {...}}, a scan job's
        rows its selected columns."""
        params = {"order_by": order_by, "desc": desc or None, "prefix": prefix, "fresh": fresh or None,
                  "window_from": window_from, "window_to": window_to}
        return Results(self, job, {k: v for k, v in params.items() if v is not None}, page_size)

    def group(self, job: str, key: Any, fresh: bool = False) -> dict:
        """One group: `key` is its key's value, or a list of the values of a job with several keys."""
        import json

        text = json.dumps([_param(k) for k in key]) if isinstance(key, (list, tuple)) else _param(key)
        return self.get(f"/jobs/{_quote(job)}/results/{_quote(text)}", fresh=fresh or None)

    def export(self, job: str, format: str = "parquet") -> dict:  # noqa: A002 - the API's parameter name
        """The current generation's export: {"url", "generation", "rows", "format", "expires_at"}; the URL
        needs no credentials until expires_at."""
        return self.get(f"/jobs/{_quote(job)}/export", format=format)

    def download(self, job: str, format: str, path: str | Path) -> dict:  # noqa: A002
        """The export, saved at `path` (whole or not at all); returns export()'s answer with "path" and "bytes"."""
        answer = self.export(job, format)
        size = download(answer["url"], Path(path), self.timeout * 10)
        return {**answer, "path": str(path), "bytes": size}


class Results:
    """Every row of a job's result. Iterating pages through the API (each pass afresh, from the first page)."""

    def __init__(self, client: Tally, job: str, params: dict[str, Any], page_size: int):
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")
        self.client, self.job, self.params, self.page_size = client, job, params, page_size

    def pages(self) -> Iterator[dict]:
        cursor = None
        while True:
            page = self.client.page(self.job, limit=self.page_size, cursor=cursor, **self.params)
            yield page
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def __iter__(self) -> Iterator[dict]:
        for page in self.pages():
            yield from page["rows"]

    def to_arrow(self):
        """A pyarrow Table: key columns then values (a scan job's selected columns), typed as the export's
        Parquet (exact decimals, dates, lists and structs)."""
        definition = self.client.definition(self.job)
        scan = definition.get("kind") == "scan"
        return _rows.to_arrow([_rows.flat(row, scan) for row in self], _rows.schema_of(definition))

    def to_pandas(self):
        """A pandas DataFrame (decimals as Decimal objects, exact). Needs pandas, which Tally does not."""
        try:
            import pandas  # noqa: F401 - only to fail early and clearly
        except ImportError:
            raise ImportError("Results.to_pandas() needs pandas: pip install pandas "
                              "(or use to_arrow(), or export(job, 'parquet'))") from None
        return self.to_arrow().to_pandas()


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)
