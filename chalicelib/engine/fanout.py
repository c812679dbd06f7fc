"""Large objects: which object versions are mapped as byte ranges, and the task that maps one range.

An uncompressed text object (CSV, JSON lines) above the split size is cut into ranges (`formats.ranges`: each
range owns the lines that start in it, so the ranges' partials merge into exactly the whole object's). The
mapper that received the object's event maps none of it: it hands one `RangeTask` per range to a dispatcher
(an asynchronous Lambda invocation on AWS, the worker pool locally), and each range's mapper writes a range
marker. The reducer applies a version once all its range markers are in (`changes.combine_ranges`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from ..formats import TextFormat, compression_of
from ..formats.ranges import split_ranges
from ..jobs import Job
from .events import ObjectEvent


@dataclass(frozen=True)
class RangeTask:
    """Map bytes [start, end) of one object version, range `index` of `count`: an invocation's payload."""

    bucket: str
    key: str
    etag: str
    version_id: str | None
    sequencer: str | None
    event_time: str | None
    size: int
    index: int
    count: int
    start: int
    end: int
    jobs: tuple[str, ...] = ()  # as ObjectEvent.jobs: empty for every job that maps the object in ranges

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "jobs": list(self.jobs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RangeTask":
        # A task dispatched before `jobs` existed has none: every job.
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name != "jobs"},
                   jobs=tuple(data.get("jobs") or ()))

    @property
    def event(self) -> ObjectEvent:
        """The object version's event, as the range's mapper pins its reads and names its contribution."""
        return ObjectEvent(self.bucket, self.key, self.etag, self.size, self.version_id, self.sequencer,
                           event_time=self.event_time, jobs=self.jobs)


Dispatch = Callable[[list[RangeTask]], None]


def splits(job: Job, key: str) -> bool:
    """Whether the job reads `key` in a way a byte range can be read: text, not compressed (a compressed
    stream cannot be entered mid-way; Parquet has its own, columnar, ranged reads)."""
    return isinstance(job.format.reader(), TextFormat) and compression_of(key) is None


def range_tasks(event: ObjectEvent, etag: str, split_bytes: int) -> list[RangeTask]:
    ranges = split_ranges(event.size, split_bytes)
    return [RangeTask(event.bucket, event.key, etag, event.version_id, event.sequencer, event.event_time,
                      event.size, index, len(ranges), start, end, event.jobs)
            for index, (start, end) in enumerate(ranges)]
