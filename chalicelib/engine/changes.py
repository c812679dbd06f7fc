"""Deciding what a reducer run changes, as pure data.

Inputs: the ledger (the live object version of every input key in the committed result), the markers in the
inbox (versions mapped, objects removed), and what S3 says is current for each key those markers touch. S3's
answer decides: events arrive late, twice and out of order, but a HEAD made now cannot be stale, so an old
version's marker never wins over a newer one, whatever order they came in. A key's new live version is the
marker (or ledger entry) of its current version; a key whose object is gone is retracted; a version that is
no longer current is dropped, its parts deleted.

A large object version is mapped in ranges, each with its own marker (engine/fanout.py). `combine_ranges`
turns a complete set into one marker of the whole version, which then competes like any other; an incomplete
set waits in the inbox while it is of the key's current version, and is dropped once it is not (or the
version was quarantined, or is live already: a repeat).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..formats import MAX_BAD_ROW_EXAMPLES
from . import layout

Marker = Mapping[str, Any]
Entry = Mapping[str, Any]


@dataclass(frozen=True)
class Current:
    """What S3 says of a key now: its ETag and version id, or absent."""

    etag: str
    version_id: str | None = None


@dataclass(frozen=True)
class IncompleteRanges:
    """Some, not yet all, of the range markers of one object version."""

    contribution: str
    key: str
    etag: str
    version_id: str | None
    markers: tuple[str, ...]  # the ids of those in


# A combined marker's counts are its ranges' sums; every other field is the version's, the same in each range.
_SUMMED = ("rows", "bad_rows", "bytes_read", "output_rows", "groups")


def marker_ids(marker: Marker) -> list[str]:
    """The inbox markers a marker stands for: itself, or the ranges it was combined from."""
    return list(marker.get("markers") or [marker["contribution"]])


def combine_ranges(markers: Iterable[Marker]) -> tuple[list[Marker], list[IncompleteRanges]]:
    """Markers as the planner takes them: each complete set of range markers (one version, one range count,
    every index) as one marker of the whole version, the others as they are; and the incomplete sets."""
    whole: list[Marker] = []
    sets: dict[tuple[str, int], dict[int, Marker]] = {}
    for marker in markers:
        if "range" in marker:
            index, count = marker["range"]
            sets.setdefault((marker["contribution"], count), {})[index] = marker  # a repeat is the same range
        else:
            whole.append(marker)
    incomplete = []
    for (contribution, count), ranges in sorted(sets.items()):
        ordered = [ranges[index] for index in sorted(ranges)]
        ids = tuple(layout.range_marker(contribution, index, count) for index in sorted(ranges))
        if len(ranges) == count:
            whole.append(_combined(ordered, ids))
        else:
            first = ordered[0]
            incomplete.append(IncompleteRanges(contribution, first["key"], first.get("etag") or "",
                                               first.get("version_id"), ids))
    return whole, incomplete


def _combined(ranges: list[Marker], ids: tuple[str, ...]) -> Marker:
    combined = {name: value for name, value in ranges[0].items() if name != "range"}
    combined.update({name: sum(r.get(name) or 0 for r in ranges) for name in _SUMMED if name in combined})
    combined["parts"] = [part for r in ranges for part in r.get("parts", [])]
    if "outputs" in combined:  # a scan job's files
        combined["outputs"] = [output for r in ranges for output in r["outputs"]]
    if "mapped_at" in combined:
        combined["mapped_at"] = max(r["mapped_at"] for r in ranges)
    if "bad_row_examples" in combined:  # each names its range; the first ranges' first, as a read would see them
        examples = [example for r in ranges for example in r.get("bad_row_examples") or ()]
        combined["bad_row_examples"] = examples[:MAX_BAD_ROW_EXAMPLES]
    combined["markers"] = list(ids)
    return combined


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


def plan_changes(ledger: Mapping[str, Entry], markers: list[Marker], current: Mapping[str, Current | None],
                 incomplete: Iterable[IncompleteRanges] = (), quarantined: frozenset[str] = frozenset()
                 ) -> ChangePlan:
    """`markers` as `combine_ranges` gives them, with its `incomplete` sets; `quarantined`: the contributions
    among those sets that a range's mapper quarantined (their other ranges will never be applied)."""
    add, retract, processed, stale, waiting = [], [], [], [], []
    by_key: dict[str, list[Marker]] = {}
    partial_sets: dict[str, list[IncompleteRanges]] = {}
    for marker in markers:
        by_key.setdefault(marker["key"], []).append(marker)
        processed += marker_ids(marker)
    for ranges in incomplete:
        by_key.setdefault(ranges.key, [])
        partial_sets.setdefault(ranges.key, []).append(ranges)
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
        for ranges in partial_sets.get(key, ()):
            version = {"etag": ranges.etag, "version_id": ranges.version_id}
            if ranges.contribution in keep:  # a repeat of ranges already applied (or applied now)
                processed += ranges.markers
            elif now is None or not is_version(version, now) or ranges.contribution in quarantined:
                processed += ranges.markers  # the rest will never come, or never count
                stale.append(ranges.contribution)
            # else: the current version's ranges are still being mapped; their markers wait in the inbox.
    # Parts of a retracted version are no longer needed either, unless that very version is added back.
    added = {m["contribution"] for m in add}
    stale += [entry["contribution"] for entry in retract if entry["contribution"] not in added]
    return ChangePlan(tuple(add), tuple(retract), tuple(processed), tuple(sorted(set(stale))), tuple(waiting))
