"""A small client of Tally's HTTP API, used by the demo and the CLI: local mode's open API, or a deployed one
with AWS_IAM (requests signed with SigV4 by botocore, credentials from the usual AWS chain) or an API key."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any, Callable, Iterator

# execute-api hosts name their region: https://{id}.execute-api.{region}.amazonaws.com/{stage}/
_EXECUTE_API = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")

Signer = Callable[[str, str], dict[str, str]]  # (method, url) -> headers to add


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body.get('message', body)}")
        self.status, self.body = status, body


class Unreachable(Exception):
    """Nothing answered at the URL, or no credentials to sign with."""


def api_key_signer(key: str) -> Signer:
    return lambda method, url: {"x-api-key": key}


def sigv4_signer(region: str | None = None, session=None) -> Signer:
    """Sign each request for API Gateway's AWS_IAM authorization, as `aws` and the SDKs do."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = session or botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise Unreachable("no AWS credentials to sign requests with (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")

    def sign(method: str, url: str) -> dict[str, str]:
        host = urllib.parse.urlsplit(url).hostname or ""
        match = _EXECUTE_API.search(host)
        signing_region = region or (match.group(1) if match else None) or session.get_config_variable("region")
        if not signing_region:
            raise Unreachable(f"cannot tell the AWS region of {host}: pass --region")
        request = AWSRequest(method=method, url=url)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", signing_region).add_auth(request)
        return dict(request.headers.items())

    return sign


def signer_for(url: str, auth: str = "auto", api_key: str | None = None, region: str | None = None) -> Signer | None:
    """`auto`: an API key if one is given, SigV4 for an execute-api host, nothing otherwise (local mode)."""
    if auth == "auto":
        host = urllib.parse.urlsplit(url).hostname or ""
        auth = "api_key" if api_key else "iam" if _EXECUTE_API.search(host) else "none"
    if auth == "api_key":
        if not api_key:
            raise Unreachable("--auth api_key needs --api-key (or TALLY_API_KEY)")
        return api_key_signer(api_key)
    return sigv4_signer(region) if auth == "iam" else None


class TallyClient:
    def __init__(self, base_url: str, timeout: float = 30.0, signer: Signer | None = None):
        self.base_url, self.timeout, self.signer = base_url.rstrip("/"), timeout, signer

    def get(self, path: str, **params: Any) -> dict:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        headers = self.signer("GET", url) if self.signer else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as response:
                return json.loads(response.read(), parse_float=Decimal)
        except urllib.error.HTTPError as error:
            raw = error.read() or b"{}"
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"message": raw.decode(errors="replace")[:200]}
            raise ApiError(error.code, body if isinstance(body, dict) else {"message": body}) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"nothing answers at {self.base_url} ({reason})") from None

    def jobs(self) -> list[dict]:
        return self.get("/jobs")["jobs"]

    def status(self, job: str) -> dict:
        return self.get(f"/jobs/{urllib.parse.quote(job, safe='')}/status")

    def results(self, job: str, **params: Any) -> dict:
        return self.get(f"/jobs/{urllib.parse.quote(job, safe='')}/results", **params)

    def all_rows(self, job: str, page_size: int = 1000) -> Iterator[dict]:
        cursor = None
        while True:
            page = self.results(job, limit=page_size, cursor=cursor)
            yield from page["rows"]
            cursor = page["next_cursor"]
            if cursor is None:
                return
