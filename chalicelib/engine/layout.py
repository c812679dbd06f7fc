"""Where Tally keeps state in the state bucket. One function per kind of object, so the scheme is in one place.

    jobs/<job>/parts/<contribution>/<attempt>-<n>.arrow
                                               the partial of one input object version, as one mapping attempt
                                               wrote it, in one or more parts (a high-cardinality object spills
                                               parts to keep the mapper's memory bounded); kept while that
                                               version is live, so it can be retracted or a result rebuilt
    jobs/<job>/parts/<contribution>/<attempt>-<n>.parquet
                                               a scan job's output rows of one input object version; the
                                               live ones are those the committed result (a file table)
                                               names (see engine/scan.py)
    jobs/<job>/inbox/<contribution>.<attempt>.json
                                               a change to apply, written after its parts: an object version
                                               was mapped (its parts are listed, or a small partial is carried
                                               inline)
    jobs/<job>/inbox/<contribution>.r<i>of<n>.<attempt>.json
                                               range i of n of a large object version was mapped (see
                                               engine/fanout.py); applied once all n are in
    jobs/<job>/inbox/<removal>.json            an object was removed (no parts; repeats of one event share it)
    jobs/<job>/inbox/repair.<token>.json       live versions whose partials are missing: the next run drops
                                               them and rebuilds the result from the others (engine/repair.py)
    views/<name>/<version>.json                a view created at run time (SQL), version by version; the
                                               latest says what the name is, or that it was dropped
                                               (engine/views.py)
    jobs/<job>/garbage/<time>-<token>.json     keys a run stopped needing, deleted once a grace period has
                                               passed and a manifest read then proves them unreferenced
                                               (engine/garbage.py)
    jobs/<job>/packs/<generation>-<token>.arrow     the inline partials one reducer commit made live, kept
                                               together (one row set per contribution) for the same reasons
                                               as parts; deleted once none of them is live
    jobs/<job>/quarantine/<contribution>.json  why an input object version could not be mapped (bad input, a
                                               budget exceeded, or the last failure of too many attempts)
    jobs/<job>/manifest.json                   the commit point: which result and ledger are current, and
                                               the ledger's totals (rows read, bad rows, bytes merged)
    jobs/<job>/counts.json                     the last reconcile's counts of the job's input versions
                                               (landed, waiting, quarantined, ...) and when it listed them,
                                               rewritten by each reconcile: what a status reads instead of
                                               listing the input (engine/counts.py)
    jobs/<job>/results/<generation>-<token>-s<shard>.arrow
                                               merged state, one object per shard of the groups by key hash
                                               (immutable; the manifest names the live one of each shard, and
                                               a commit rewrites only the shards it changes)
    jobs/<job>/ledger/<generation>-<token>.arrow    the live object version of every input key in that result
    exports/<job>/<generation>-<fingerprint>.<format>
                                               a finalized snapshot of one generation's result (parquet or
                                               csv), written once by the API for whoever asks first and handed
                                               out as presigned URLs (engine/export.py); outside jobs/ so the
                                               API's role may write here and nowhere else
    exports/<job>/garbage/<time>-<token>.json  the API's garbage records: older generations' exports, deleted
                                               once a grace period longer than a URL's lifetime has passed; the
                                               collector honours only export keys named here
    attempts/<subject>/<attempt>.json          one mapping attempt at an object version (<subject>: its
                                               contribution) or at one range of it (<contribution>.r<i>of<n>),
                                               by the jobs that share its parse, whichever job they are: when
                                               it started, and, if a job failed, why (engine/attempts.py);
                                               deleted once every job is done, so a poison object is
                                               quarantined after a few failed attempts instead of retried
                                               forever

A contribution id is derived from (input key, ETag): every event, listing and HEAD names a version by its
ETag, versioned bucket or not, so they all agree on it (the version id only pins the mapper's reads). Each
mapping attempt writes its parts and marker under an id of its own: a duplicated or retried delivery never
rewrites, and a clean-up never deletes, what another attempt wrote (docs/deletion.md). The ledger says whether
a version is live already, and which attempt's parts it keeps.
"""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import NamedTuple


def contribution_id(key: str, version: str) -> str:
    return hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()[:32]


def job_prefix(job: str) -> str:
    """Everything a job keeps: what a dropped view leaves to delete."""
    return f"jobs/{job}/"


def views_prefix() -> str:
    return "views/"


def view_key(name: str, version: int) -> str:
    """A view's definition, version by version (zero-padded, so a listing sorts them)."""
    return f"{views_prefix()}{name}/{version:06d}.json"


def view_of(key: str) -> str:
    return key.rsplit("/", 2)[-2]


def inbox_prefix(job: str) -> str:
    return f"jobs/{job}/inbox/"


def parts_prefix(job: str, contribution: str = "") -> str:
    return f"jobs/{job}/parts/{contribution + '/' if contribution else ''}"


def new_attempt() -> str:
    """A fresh id for one mapping attempt: its part keys and marker key are its own."""
    return uuid.uuid4().hex[:16]


def part_key(job: str, contribution: str, attempt: str, index: int, extension: str = "arrow") -> str:
    return f"{parts_prefix(job, contribution)}{attempt}-{index:05d}.{extension}"


def contribution_of_part(key: str) -> str:
    return key.rsplit("/", 2)[-2]


def attempt_of_part(key: str) -> tuple[str, str]:
    """(contribution, attempt) of a part key."""
    contribution, name = key.rsplit("/", 2)[-2:]
    return contribution, name.split("-", 1)[0]


def packs_prefix(job: str) -> str:
    return f"jobs/{job}/packs/"


def is_pack(ref: str) -> bool:
    """Whether a ledger entry's reference names a pack (shared by contributions) rather than its own part."""
    return "/packs/" in ref


def inbox_key(job: str, marker: str) -> str:
    return f"{inbox_prefix(job)}{marker}.json"


def id_of(json_key: str) -> str:
    """The marker or contribution id an inbox or quarantine key is named by."""
    return json_key.rsplit("/", 1)[-1].removesuffix(".json")


def version_marker(contribution: str, attempt: str) -> str:
    """Marker id of one attempt at mapping a whole object version."""
    return f"{contribution}.{attempt}"


def range_marker(contribution: str, index: int, count: int, attempt: str) -> str:
    """Marker id of one attempt at range `index` of `count` of a contribution. It starts with the contribution
    id, so a version's range markers sort together in the inbox listing."""
    return f"{contribution}.r{index}of{count}.{attempt}"


def contribution_of_marker(marker: str) -> str:
    """The contribution a marker id (a whole version's, a range's or a removal's) is about."""
    return marker.split(".", 1)[0]


def range_of_marker(marker: str) -> tuple[int, int] | None:
    """(index, count) of a range marker id; None for any other marker."""
    for segment in marker.split(".")[1:]:
        index, of, count = segment[1:].partition("of")
        if segment.startswith("r") and of and index.isdigit() and count.isdigit():
            return int(index), int(count)
    return None


def attempt_of_marker(marker: str) -> tuple[str, str] | None:
    """(contribution, attempt) of a marker id that names parts (a version's or a range's); None otherwise."""
    segments = marker.split(".")
    if len(segments) < 2 or segments[0] == REPAIR:
        return None
    return segments[0], segments[-1]


REPAIR = "repair"


def repair_marker() -> str:
    return f"{REPAIR}.{uuid.uuid4().hex[:12]}"


def removal_marker(key: str, sequencer: str | None) -> str:
    """Marker id of an ObjectRemoved event: S3's sequencer makes repeats of one event share it."""
    return contribution_id(key, "removed:" + (sequencer or uuid.uuid4().hex))


def garbage_prefix(job: str) -> str:
    return f"jobs/{job}/garbage/"


def garbage_key(job: str, at: datetime) -> str:
    """A garbage record's key: sorts by when it was written, and is unique to the run that writes it."""
    return f"{garbage_prefix(job)}{at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.json"


def quarantine_prefix(job: str) -> str:
    return f"jobs/{job}/quarantine/"


def quarantine_key(job: str, contribution: str) -> str:
    # Per version: a record stays true of its version, and status shows only versions still in the bucket.
    return f"{quarantine_prefix(job)}{contribution}.json"


def attempts_prefix(subject: str = "") -> str:
    return f"attempts/{subject + '/' if subject else ''}"


def attempt_subject(contribution: str, in_range: tuple[int, int] | None = None) -> str:
    """What attempts are counted for: a whole version, or (index, count) one range of it."""
    return contribution if in_range is None else f"{contribution}.r{in_range[0]}of{in_range[1]}"


def attempt_key(subject: str, attempt: str) -> str:
    return f"{attempts_prefix(subject)}{attempt}.json"


def attempt_subject_of(key: str) -> str:
    return key.rsplit("/", 2)[-2]


def manifest_key(job: str) -> str:
    return f"jobs/{job}/manifest.json"


def counts_key(job: str) -> str:
    return f"jobs/{job}/counts.json"


def results_prefix(job: str) -> str:
    return f"jobs/{job}/results/"


def ledger_prefix(job: str) -> str:
    return f"jobs/{job}/ledger/"


class GenerationKeys(NamedTuple):
    results: str  # <results prefix><generation>-<token>, which each shard's key extends
    ledger: str
    pack: str

    def result(self, shard: int) -> str:
        return f"{self.results}-s{shard:03d}.arrow"


def generation_keys(job: str, generation: int) -> GenerationKeys:
    """Fresh keys for a result's shards, its ledger and its pack: unique per attempt, so racing reducers never
    share one."""
    token = uuid.uuid4().hex[:12]
    name = f"{generation:012d}-{token}"
    return GenerationKeys(results_prefix(job) + name, ledger_prefix(job) + name + ".arrow",
                          packs_prefix(job) + name + ".arrow")


def generation_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1].split("-", 1)[0])


def exports_prefix(job: str) -> str:
    return f"exports/{job}/"


def export_key(job: str, generation: int, fingerprint: str, fmt: str) -> str:
    """Deterministic per job, generation, definition and format: whoever exports a generation first writes it,
    everyone after finds it."""
    return f"{exports_prefix(job)}{generation:012d}-{fingerprint}.{fmt}"


def export_garbage_prefix(job: str) -> str:
    return f"{exports_prefix(job)}garbage/"


def export_garbage_key(job: str, at: datetime) -> str:
    return garbage_key(job, at).replace(garbage_prefix(job), export_garbage_prefix(job), 1)


def export_generation(key: str) -> int | None:
    """The generation an export key is of; None for any other key under the exports prefix (a record)."""
    parts = key.split("/")  # exports/<job>/<name>; a record is one level deeper
    head = parts[-1].split("-", 1)[0]
    return int(head) if len(parts) == 3 and parts[0] == "exports" and head.isdigit() else None
