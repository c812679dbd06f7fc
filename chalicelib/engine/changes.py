"""Deciding what a reducer run changes, as pure data.

Inputs: the ledger (the live object version of every input key in the committed result), the markers in the
inbox (versions mapped, objects removed), and what S3 says is current for each key those markers touch. S3's
answer decides: events arrive late, twice and out of order, but a HEAD made now cannot be stale, so an old
version's marker never wins over a newer one, whatever order they came in. A key's new live version is the
marker (or ledger entry) of its current version; a key whose object is gone is retracted; a version that is
no longer current is dropped, its parts deleted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

Marker = Mapping[str, Any]
Entry = Mapping[str, Any]


@dataclass(frozen=True)
class Current:
    """What S3 says of a key now: its ETag and version id, or absent."""

    etag: str
    version_id: str | None = None


@dataclass(frozen=True)
class ChangePlan:
    add: tuple[Marker, ...] = ()                # versions that become live
    retract: tuple[Entry, ...] = ()             # ledger entries that stop being live
    processed: tuple[str, ...] = ()             # marker ids to delete after the commit
    stale_contributions: tuple[str, ...] = ()   # contributions whose parts can go: never live, never will be
    waiting: tuple[str, ...] = field(default=())  # keys whose current version has no marker yet

    @property
    def changes_result(self) -> bool:
        return bool(self.add or self.retract)


def is_version(record: Mapping[str, Any], current: Current) -> bool:
    if record.get("version_id") and current.version_id:
        return record["version_id"] == current.version_id
    return (record.get("etag") or "").strip('"') == current.etag


def plan_changes(ledger: Mapping[str, Entry], markers: list[Marker],
                 current: Mapping[str, Current | None]) -> ChangePlan:
    add, retract, processed, stale, waiting = [], [], [], [], []
    by_key: dict[str, list[Marker]] = {}
    for marker in markers:
        by_key.setdefault(marker["key"], []).append(marker)
        processed.append(marker["contribution"])
    for key in sorted(by_key):
        now, live = current.get(key), ledger.get(key)
        offered = [m for m in by_key[key] if m["kind"] == "put"]
        chosen = next((m for m in offered if now is not None and is_version(m, now)), None)
        if now is None:
            if live is not None:
                retract.append(live)
        elif chosen is not None:
            if live is None or live["contribution"] != chosen["contribution"]:
                add.append(chosen)
                if live is not None:
                    retract.append(live)
        elif live is None or not is_version(live, now):
            waiting.append(key)  # its own event (or the reconcile) brings the current version's marker
        keep = {chosen["contribution"] if chosen else None, live["contribution"] if live else None}
        stale += [m["contribution"] for m in offered if m["contribution"] not in keep]
    # Parts of a retracted version are no longer needed either, unless that very version is added back.
    added = {m["contribution"] for m in add}
    stale += [entry["contribution"] for entry in retract if entry["contribution"] not in added]
    return ChangePlan(tuple(add), tuple(retract), tuple(processed), tuple(sorted(set(stale))), tuple(waiting))
