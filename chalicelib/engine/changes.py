"""Deciding what a reducer run changes, as pure data.

Inputs: the ledger (the live object version of every input key in the committed result), the markers in the
inbox (versions mapped, objects removed), and what S3 says is current for each key those markers touch. S3's
answer decides: events arrive late, twice and out of order, but a HEAD made now cannot be stale, so an old
version's marker never wins over a newer one, whatever order they came in. A key's new live version is the
marker (or ledger entry) of its current version; a key whose object is gone is retracted; a version that is
no longer current is dropped. What parts may be deleted is not decided here: the reducer computes it from what
the committed ledger references (docs/deletion.md).

A large object version is mapped in ranges, each with its own marker (engine/fanout.py). `combine_ranges`
turns a complete set into one marker of the whole version, which then competes like any other; an incomplete
set waits in the inbox while it is of the key's current version, and is dropped once it is not (or the
version was quarantined, or is live already: a repeat).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..formats import MAX_BAD_ROW_EXAMPLES

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
    """The inbox markers a marker stands for: itself (`id`, the key it was read from), or every range marker
    it was combined from, repeats included."""
    return list(marker.get("markers") or [marker["id"]])


def combine_ranges(markers: Iterable[Marker]) -> tuple[list[Marker], list[IncompleteRanges]]:
    """Markers as the planner takes them: each complete set of range markers (one version, one range count,
    every index) as one marker of the whole version, the others as they are; and the incomplete sets. A range
    mapped twice (a retried or duplicated invocation) has a marker per attempt: the set takes one of them, and
    stands for all, so all are processed together."""
    whole: list[Marker] = []
    sets: dict[tuple[str, int], dict[int, list[Marker]]] = {}
    for marker in markers:
        if "range" in marker:
            index, count = marker["range"]
            sets.setdefault((marker["contribution"], count), {}).setdefault(index, []).append(marker)
        else:
            whole.append(marker)
    incomplete = []
    for (contribution, count), ranges in sorted(sets.items()):
        ids = tuple(sorted(m["id"] for attempts in ranges.values() for m in attempts))
        if len(ranges) == count:
            chosen = [min(ranges[index], key=lambda m: m["id"]) for index in sorted(ranges)]
            whole.append(_combined(chosen, ids))
        else:
            first = ranges[min(ranges)][0]
            incomplete.append(IncompleteRanges(contribution, first["key"], first.get("etag") or "",
                                               first.get("version_id"), ids))
    return whole, incomplete


def _combined(ranges: list[Marker], ids: tuple[str, ...]) -> Marker:
    combined = {name: value for name, value in ranges[0].items() if name not in ("range", "id")}
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
    waiting: tuple[str, ...] = field(default=())  # keys whose current version has no marker yet
    # Live versions whose partials are gone (engine/repair.py): they leave the ledger without being subtracted,
    # and the result is rebuilt from every other live version's partials.
    lost: tuple[Entry, ...] = ()

    @property
    def changes_result(self) -> bool:
        return bool(self.add or self.retract or self.lost)

    @property
    def rebuilds(self) -> bool:
        return bool(self.lost)


def released(read: Iterable[Marker], plan: ChangePlan) -> set[str]:
    """What `plan` stops needing, unless a ledger still references it: the parts of every marker it processes
    (of repeated attempts and duplicate ranges too), and the parts and packs of the versions it retracts or
    drops as lost. `read`: the markers as read, before `combine_ranges`."""
    processed = set(plan.processed)
    return {part for marker in read if marker["id"] in processed for part in marker.get("parts", [])} \
        | {ref for entry in (*plan.retract, *plan.lost) for ref in entry["parts"]}


def is_version(record: Mapping[str, Any], current: Current) -> bool:
    """Whether a marker or ledger entry is of the version S3 says is current. By ETag, as every event, listing
    and HEAD names a version (the version id is not in a listing): an object written again with the same bytes
    is the same contribution."""
    return (record.get("etag") or "").strip('"') == current.etag


def plan_changes(ledger: Mapping[str, Entry], markers: list[Marker], current: Mapping[str, Current | None],
                 incomplete: Iterable[IncompleteRanges] = (), quarantined: frozenset[str] = frozenset()
                 ) -> ChangePlan:
    """`markers` as `combine_ranges` gives them, with its `incomplete` sets; `quarantined`: the contributions
    among those sets that a range's mapper quarantined (their other ranges will never be applied). A repair
    marker names live contributions whose partials are missing: they are dropped from the ledger first, so the
    same run can add their keys' current versions again."""
    add, retract, processed, waiting = [], [], [], []
    repairs = [m for m in markers if m["kind"] == "repair"]
    missing = {contribution for m in repairs for contribution in m["lost"]}
    lost = [entry for entry in ledger.values() if entry["contribution"] in missing]
    ledger = {key: entry for key, entry in ledger.items() if entry["contribution"] not in missing}
    processed += [marker_id for m in repairs for marker_id in marker_ids(m)]
    by_key: dict[str, list[Marker]] = {}
    partial_sets: dict[str, list[IncompleteRanges]] = {}
    for marker in markers:
        if marker["kind"] == "repair":
            continue
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
        for ranges in partial_sets.get(key, ()):
            version = {"etag": ranges.etag, "version_id": ranges.version_id}
            if ranges.contribution in keep:  # a repeat of ranges already applied (or applied now)
                processed += ranges.markers
            elif now is None or not is_version(version, now) or ranges.contribution in quarantined:
                processed += ranges.markers  # the rest will never come, or never count
            # else: the current version's ranges are still being mapped; their markers wait in the inbox.
    return ChangePlan(tuple(add), tuple(retract), tuple(processed), tuple(waiting), tuple(lost))
