"""A small client of Tally's HTTP API (standard library only), used by the demo and the CLI."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any, Iterator


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body.get('message', body)}")
        self.status, self.body = status, body


class TallyClient:
    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def get(self, path: str, **params: Any) -> dict:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return json.loads(response.read(), parse_float=Decimal)
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, json.loads(error.read() or b"{}")) from None

    def jobs(self) -> list[dict]:
        return self.get("/jobs")["jobs"]

    def status(self, job: str) -> dict:
        return self.get(f"/jobs/{urllib.parse.quote(job)}/status")

    def results(self, job: str, **params: Any) -> dict:
        return self.get(f"/jobs/{urllib.parse.quote(job)}/results", **params)

    def all_rows(self, job: str, page_size: int = 1000) -> Iterator[dict]:
        cursor = None
        while True:
            page = self.results(job, limit=page_size, cursor=cursor)
            yield from page["rows"]
            cursor = page["next_cursor"]
            if cursor is None:
                return
