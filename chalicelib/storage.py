"""The one place that speaks to S3. Everything else gets an ObjectStore and sees Tally's own errors.

Backed by boto3 against whatever endpoint the client points at: AWS in production, moto's server in local
mode and in tests. There is deliberately no in-memory twin: tests exercise these very calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Iterator, Protocol

from .errors import CommitConflict, ObjectMissing

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class StoredObject:
    key: str
    etag: str  # without the quotes S3 puts around it, as S3 event records carry it
    size: int
    last_modified: datetime | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class Opened:
    body: IO[bytes]
    etag: str
    size: int


def normalize_etag(etag: str) -> str:
    return etag.strip('"')


@dataclass(frozen=True)
class ListedPage:
    objects: list[StoredObject]
    truncated: bool  # more keys follow under the prefix


class ObjectStore(Protocol):
    bucket: str

    def open(self, key: str, *, if_match: str | None = None, version_id: str | None = None,
             byte_range: tuple[int, int] | None = None) -> Opened: ...
    def get(self, key: str) -> tuple[bytes, str]: ...
    def get_range(self, key: str, start: int, end: int) -> bytes: ...
    def get_tail(self, key: str, length: int) -> tuple[bytes, int]: ...
    def head(self, key: str) -> StoredObject | None: ...
    def put(self, key: str, data: bytes, content_type: str = ...) -> str: ...
    def put_if_absent(self, key: str, data: bytes, content_type: str = ...) -> str: ...
    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str = ...) -> str: ...
    def list(self, prefix: str, start_after: str | None = None, page_size: int = 1000) -> Iterator[StoredObject]: ...
    def list_page(self, prefix: str, max_keys: int = 1000) -> ListedPage: ...
    def delete(self, keys: list[str]) -> None: ...
    def presigned_get(self, key: str, expires: timedelta, filename: str | None = None) -> str: ...


class S3ObjectStore:
    """ObjectStore over one bucket. `client` is any boto3 S3 client (inject a wrapped one to inject faults)."""

    def __init__(self, bucket: str, client):
        self.bucket = bucket
        self._client = client
        self._errors = client.exceptions

    def open(self, key, *, if_match=None, version_id=None, byte_range=None) -> Opened:
        params = {"Bucket": self.bucket, "Key": key}
        if if_match:
            params["IfMatch"] = f'"{normalize_etag(if_match)}"'
        if version_id:
            params["VersionId"] = version_id
        if byte_range:
            params["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        response = self._call(self._client.get_object, key, **params)
        return Opened(response["Body"], normalize_etag(response["ETag"]), response["ContentLength"])

    def get(self, key: str) -> tuple[bytes, str]:
        opened = self.open(key)
        with opened.body as body:
            return body.read(), opened.etag

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object: a block of an immutable run, fetched without the rest."""
        with self.open(key, byte_range=(start, end)).body as body:
            return body.read()

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        """The last `length` bytes of the object (all of it if shorter) and its whole size: a run's index is at
        its end, and a suffix range finds it in one request without knowing the size first."""
        response = self._call(self._client.get_object, key, Bucket=self.bucket, Key=key, Range=f"bytes=-{length}")
        with response["Body"] as body:
            data = body.read()
        content_range = response.get("ContentRange")  # "bytes 100-199/200"; absent if the whole object came back
        return data, int(content_range.rsplit("/", 1)[1]) if content_range else len(data)

    def head(self, key: str) -> StoredObject | None:
        """The object's current version, or None if there is none."""
        try:
            response = self._call(self._client.head_object, key, Bucket=self.bucket, Key=key)
        except ObjectMissing:
            return None
        version = response.get("VersionId")
        return StoredObject(key, normalize_etag(response["ETag"]), response["ContentLength"],
                            response.get("LastModified"), None if version in (None, "null") else version)

    def put(self, key, data, content_type="application/octet-stream") -> str:
        return self._put(key, data, content_type)

    def put_if_absent(self, key, data, content_type="application/octet-stream") -> str:
        return self._put(key, data, content_type, IfNoneMatch="*")

    def put_if_match(self, key, data, etag, content_type="application/octet-stream") -> str:
        return self._put(key, data, content_type, IfMatch=f'"{normalize_etag(etag)}"')

    def list(self, prefix: str, start_after: str | None = None, page_size: int = 1000) -> Iterator[StoredObject]:
        """Keys under `prefix` in order, after `start_after` if given. Lazy: stopping early saves pages."""
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size},
                                       **({"StartAfter": start_after} if start_after else {})):
            for item in page.get("Contents", []):
                yield _stored(item)

    def list_page(self, prefix: str, max_keys: int = 1000) -> ListedPage:
        """The first `max_keys` keys under `prefix` (S3 answers at most 1,000): one request, whatever follows."""
        page = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=max_keys)
        return ListedPage([_stored(item) for item in page.get("Contents", [])], bool(page.get("IsTruncated")))

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(f"could not delete s3://{self.bucket}/{first['Key']}: {first['Message']}")

    def presigned_get(self, key: str, expires: timedelta, filename: str | None = None) -> str:
        """A URL anyone may GET the object with until `expires` from now, with no credentials of their own; it
        carries the signer's permissions, and dies with temporary credentials if those expire first. `filename`:
        what a browser saves it as."""
        params = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._client.generate_presigned_url("get_object", Params=params,
                                                   ExpiresIn=int(expires.total_seconds()))

    def _put(self, key, data, content_type, **conditions) -> str:
        response = self._call(self._client.put_object, key, Bucket=self.bucket, Key=key, Body=data,
                              ContentType=content_type, **conditions)
        return normalize_etag(response["ETag"])

    def _call(self, operation, key, **params):
        try:
            return operation(**params)
        except self._errors.NoSuchKey as exc:
            raise ObjectMissing(self.bucket, key) from exc
        except self._errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _CONFLICT_CODES or status in {"412", "409"}:
                raise CommitConflict(f"s3://{self.bucket}/{key}: {code or status} "
                                     f"({error.get('Condition') or 'condition'} did not hold)") from exc
            if code in _MISSING_CODES or status == "404":
                raise ObjectMissing(self.bucket, key) from exc
            raise


def _stored(item: dict) -> StoredObject:
    return StoredObject(item["Key"], normalize_etag(item["ETag"]), item["Size"], item.get("LastModified"))


def make_s3_client(endpoint_url: str | None, region: str, max_connections: int = 32):
    import boto3
    from botocore.config import Config

    # signature_version: presigned URLs are SigV4, which every region takes (botocore presigns us-east-1's with
    # SigV2, which newer regions refuse); other requests are SigV4 anyway.
    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=max_connections,
                    s3={"addressing_style": "path"} if endpoint_url else {}, signature_version="s3v4")
    extra = {}
    if endpoint_url and not boto3.Session().get_credentials():
        # A loopback endpoint (moto) takes any credentials; AWS never gets here because endpoint_url is None.
        extra = {"aws_access_key_id": "tally-local", "aws_secret_access_key": "tally-local"}
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config, **extra)
