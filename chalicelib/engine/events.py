"""S3 event records, every one of them, with keys unquoted (S3 URL-encodes keys, `+` for space).

Accepts a direct S3 notification (`{"Records": [{"s3": ...}]}`), the same wrapped in SQS messages (local mode's
queue, or an S3 -> SQS -> Lambda deployment), and ignores S3's `s3:TestEvent`. `notification` writes the
records back in S3's shape, for the events the reconcile hands to the mapper.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote_plus, unquote_plus


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
    # The jobs to map it for; empty: every job whose input it is. The reconcile names the job it found the
    # object missing from, so the others, which have it, do not map it again.
    jobs: tuple[str, ...] = ()

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
            jobs=tuple(record.get("tallyJobs") or ()),
        )


def notification(events: list[ObjectEvent]) -> dict[str, Any]:
    """The S3 notification S3 would send for `events`: `parse_records` reads back exactly these events."""
    return {"Records": [_record(event) for event in events]}


def _record(event: ObjectEvent) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": quote_plus(event.key, safe="/"), "size": event.size, "eTag": event.etag}
    if event.version_id is not None:
        obj["versionId"] = event.version_id
    if event.sequencer is not None:
        obj["sequencer"] = event.sequencer
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event.name,
              "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": event.bucket, "arn": f"arn:aws:s3:::{event.bucket}"},
                     "object": obj}}
    if event.event_time is not None:
        record["eventTime"] = event.event_time
    if event.jobs:  # not S3's: only the reconcile's records carry it
        record["tallyJobs"] = list(event.jobs)
    return record
