"""S3 event records, every one of them, with keys unquoted (S3 URL-encodes keys, `+` for space).

Accepts a direct S3 notification (`{"Records": [{"s3": ...}]}`), the same wrapped in SQS messages (local mode's
queue, or an S3 -> SQS -> Lambda deployment), and ignores S3's `s3:TestEvent`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str
    etag: str
    size: int
    version_id: str | None = None
    sequencer: str | None = None
    name: str = "ObjectCreated:Put"
    event_time: str | None = None  # when S3 saw the change (ISO 8601): the start of the lag metric

    @property
    def created(self) -> bool:
        return self.name.startswith("ObjectCreated")


def parse_records(event: dict[str, Any]) -> list[ObjectEvent]:
    return list(_records(event))


def _records(event: dict[str, Any]) -> Iterator[ObjectEvent]:
    for record in event.get("Records", []):
        if record.get("eventSource") == "aws:sqs" or "body" in record:
            yield from _records(json.loads(record["body"]))
            continue
        s3 = record.get("s3")
        if not s3:
            continue
        obj = s3["object"]
        yield ObjectEvent(
            bucket=s3["bucket"]["name"],
            key=unquote_plus(obj["key"]),
            etag=(obj.get("eTag") or "").strip('"'),
            size=int(obj.get("size") or 0),
            version_id=obj.get("versionId"),
            sequencer=obj.get("sequencer"),
            name=record.get("eventName", "ObjectCreated:Put"),
            event_time=record.get("eventTime"),
        )
