"""HTTP for the client: GETs with JSON bodies (exact decimals), request signing (SigV4 for AWS_IAM stages, an
API key for api_key ones), and the errors a caller tells apart. The standard library only, botocore to sign."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

# execute-api hosts name their region: https://{id}.execute-api.{region}.amazonaws.com/{stage}/
_EXECUTE_API = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")

Signer = Callable[..., dict[str, str]]  # (method, url[, body]) -> headers to add; a body only when there is one


class TallyClientError(Exception):
    """Anything the client could not do."""


class ApiError(TallyClientError):
    """The API answered with an error status."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body.get('message', body)}")
        self.status, self.body = status, body


class Unreachable(TallyClientError):
    """Nothing answered at the URL, or no credentials to sign with."""


class NotDeployed(TallyClientError):
    """A stage was named whose deployed API this project directory does not know."""


def is_execute_api(url: str) -> bool:
    return bool(_EXECUTE_API.search(urllib.parse.urlsplit(url).hostname or ""))


def api_key_signer(key: str) -> Signer:
    return lambda method, url: {"x-api-key": key}


def sigv4_signer(region: str | None = None, session=None) -> Signer:
    """Sign each request for API Gateway's AWS_IAM authorization, as `aws` and the SDKs do (credentials from
    the usual AWS chain, or `session`'s)."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = session or botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise Unreachable("no AWS credentials to sign requests with (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")

    def sign(method: str, url: str, body: bytes = b"") -> dict[str, str]:
        host = urllib.parse.urlsplit(url).hostname or ""
        match = _EXECUTE_API.search(host)
        signing_region = region or (match.group(1) if match else None) or session.get_config_variable("region")
        if not signing_region:
            raise Unreachable(f"cannot tell the AWS region of {host}: pass region")
        request = AWSRequest(method=method, url=url, data=body)  # SigV4 signs the body's hash too
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", signing_region).add_auth(request)
        return dict(request.headers.items())

    return sign


def signer_for(url: str, auth: str = "auto", api_key: str | None = None, region: str | None = None,
               session=None) -> Signer | None:
    """`auto`: an API key if one is given, SigV4 for an execute-api host, nothing otherwise (local mode)."""
    if auth == "auto":
        auth = "api_key" if api_key else "iam" if is_execute_api(url) else "none"
    if auth == "api_key":
        if not api_key:
            raise Unreachable("auth api_key needs an API key (--api-key, or TALLY_API_KEY)")
        return api_key_signer(api_key)
    if auth not in ("iam", "none"):
        raise ValueError(f"auth must be auto, iam, api_key or none, got {auth!r}")
    return sigv4_signer(region, session) if auth == "iam" else None


def get_json(url: str, signer: Signer | None, timeout: float) -> Any:
    """GET `url`; the body as JSON with every non-integer number a Decimal (the API writes every digit)."""
    return request_json("GET", url, signer, timeout)


def request_json(method: str, url: str, signer: Signer | None, timeout: float, payload: Any = None) -> Any:
    """`method` on `url`, with `payload` as a JSON body if given; the answer as get_json reads it."""
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = {} if signer is None else signer(method, url, body) if body else signer(method, url)
    if body:
        headers = {**headers, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
        raise Unreachable(f"nothing answers at {url} ({reason})") from None


def download(url: str, path: Path, timeout: float) -> int:
    """A presigned URL's object to `path` (unsigned: the URL carries the permission), written whole or not at
    all. Returns the bytes written."""
    path = Path(path)
    partial = Path(tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")[1])
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        partial.replace(path)
    except urllib.error.HTTPError as error:
        raise ApiError(error.code, {"message": f"downloading the export: {error.reason}"}) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise Unreachable(f"could not download the export ({getattr(error, 'reason', error)})") from None
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size
