"""How many of a job's input object versions are where, and the totals of its ledger: the one definition of the
numbers the status reports, computed from listings, and kept where a status reads them in one GET.

- landed: the versions in the job's input prefix (what a listing shows);
- merged: landed versions live in the ledger;
- quarantined: landed versions with a quarantine record;
- waiting: landed versions neither merged nor quarantined;
- to_retract: live versions no longer landed (removed, or replaced by another version);
- stale: waiting versions with no marker in the inbox that landed before the event grace, so not merely in
  flight (their events were lost, their mappings keep failing, or the reconcile has just handed them over),
  and live versions replaced by one of those. The inbox follows every other change into the result; these
  it cannot follow until they are mapped.

The reconcile lists the input prefix anyway, so it counts (`count_inputs`) and writes the counts to
`layout.counts_key`; each reducer commit keeps its ledger's totals (`ledger_totals`) in the manifest.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Collection, Iterable, Mapping

import pyarrow.compute as pc

from ..errors import ObjectMissing
from ..storage import ObjectStore, StoredObject
from . import layout

MAX_LISTED_QUARANTINE = 100
MAX_LISTED_BAD_ROWS = 100  # objects listed with their bad rows; `bad_rows_skipped` counts them all
_FORMAT = 1


@dataclass(frozen=True)
class InputCounts:
    landed: int = 0
    merged: int = 0
    quarantined: int = 0
    waiting: int = 0
    to_retract: int = 0
    stale_waiting: int = 0
    stale_retract: int = 0
    oldest_waiting: datetime | None = None
    oldest_stale: datetime | None = None
    # Not stored: the first quarantined versions by key, whose records a status lists.
    held: tuple[StoredObject, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["held"]
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "InputCounts":
        return cls(**{k: datetime.fromisoformat(v) if k.startswith("oldest_") and v else v for k, v in fields.items()})


def count_inputs(landed: Iterable[StoredObject], live: Mapping[str, str], quarantined: Collection[str]
                 ) -> InputCounts:
    """`live`: the ledger's version (ETag) of each key; `quarantined`: contributions with a quarantine record.
    The stale counts are the reconcile's to add (`with_stale`): only it knows what it has just mapped."""
    merged, held, waiting = 0, [], []
    by_key: dict[str, StoredObject] = {}
    for obj in landed:
        by_key[obj.key] = obj
        reflected = live.get(obj.key) == obj.etag
        merged += reflected
        if layout.contribution_id(obj.key, obj.etag) in quarantined:
            held.append(obj)
        elif not reflected:
            waiting.append(obj)
    gone = sum(key not in by_key or by_key[key].etag != etag for key, etag in live.items())
    held.sort(key=lambda obj: obj.key)
    return InputCounts(len(by_key), merged, len(held), len(waiting), gone, oldest_waiting=_oldest(waiting),
                       held=tuple(held[:MAX_LISTED_QUARANTINE]))


def with_stale(counts: InputCounts, stale: Collection[StoredObject], replacing: Collection[str]) -> InputCounts:
    """`counts` with their stale part: the waiting versions `stale`, and the live versions of the keys in
    `replacing` that one of them replaces."""
    return replace(counts, stale_waiting=len(stale), stale_retract=sum(obj.key in replacing for obj in stale),
                   oldest_stale=_oldest(stale))


def _oldest(objects: Iterable[StoredObject]) -> datetime | None:
    return min((obj.last_modified for obj in objects if obj.last_modified is not None), default=None)


def after_inbox_drained(counts: InputCounts) -> InputCounts:
    """The counts once every marker the inbox held when they were taken is applied: what is left waiting is the
    stale part; the rest is taken as merged (a marker may also have been dropped, or its version quarantined;
    the next count corrects that)."""
    return replace(counts, merged=counts.merged + counts.waiting - counts.stale_waiting,
                   waiting=counts.stale_waiting, to_retract=counts.stale_retract,
                   oldest_waiting=counts.oldest_stale)


@dataclass(frozen=True)
class Counted:
    """What the reconcile counted, and when it listed."""

    taken_at: datetime
    counts: InputCounts
    quarantine: tuple[dict, ...] = ()  # {"etag": of the record's object, "record": as the mapper wrote it}

    def encode(self) -> bytes:
        return json.dumps({"format": _FORMAT, "taken_at": self.taken_at.isoformat(), **self.counts.as_dict(),
                           "quarantine": list(self.quarantine)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Counted | None":
        fields = json.loads(data)
        if fields.pop("format", None) != _FORMAT:
            return None  # written by another version of Tally: as if not counted yet
        taken_at, quarantine = datetime.fromisoformat(fields.pop("taken_at")), fields.pop("quarantine")
        return cls(taken_at, InputCounts.from_dict(fields), tuple(quarantine))

    def records(self) -> list[dict]:
        return [entry["record"] for entry in self.quarantine]


def read_counted(store: ObjectStore, job: str) -> Counted | None:
    try:
        return Counted.decode(store.get(layout.counts_key(job))[0])
    except ObjectMissing:
        return None


def quarantine_records(store: ObjectStore, job: str, held: Iterable[StoredObject], listed: Mapping[str, str],
                       known: Counted | None) -> list[dict]:
    """The records of the `held` versions, each as {"etag", "record"}: `listed` gives each record's ETag by
    contribution, and a record `known` already holds at that ETag is not read again."""
    cached = {(layout.contribution_id(e["record"]["key"], e["record"]["etag"]), e["etag"]): e["record"]
              for e in (known.quarantine if known else ())}
    entries = []
    for obj in held:
        contribution = layout.contribution_id(obj.key, obj.etag)
        etag = listed[contribution]
        record = cached.get((contribution, etag))
        if record is None:
            try:
                data, etag = store.get(layout.quarantine_key(job, contribution))
            except ObjectMissing:
                continue  # cleared by a good version meanwhile
            record = {"attempts": 1, **json.loads(data)}  # records from before attempts were counted: one
        entries.append({"etag": etag, "record": record})
    return entries


def ledger_totals(ledger) -> dict[str, Any]:
    """Rows read, bad rows skipped and bytes merged over every live version, and the first versions by key that
    had rows skipped, with the first few rows' lines and reasons."""
    def total(column: str) -> int:
        return int((pc.sum(ledger.column(column)).as_py() if ledger.num_rows else 0) or 0)

    bad = []
    if ledger.num_rows:
        having = ledger.filter(pc.fill_null(pc.greater(ledger.column("bad_rows"), 0), False))
        having = having.select(["key", "etag", "bad_rows", "bad_row_examples"]).slice(0, MAX_LISTED_BAD_ROWS)
        bad = [{"key": row["key"], "etag": row["etag"], "bad_rows": row["bad_rows"],
                "examples": row["bad_row_examples"] or []} for row in having.to_pylist()]
    return {"rows_read": total("rows"), "bad_rows_skipped": total("bad_rows"), "bytes_merged": total("size"),
            "bad_rows": bad}
