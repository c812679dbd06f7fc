"""Where Tally keeps state in the state bucket. One function per kind of object, so the scheme is in one place.

    jobs/<job>/inbox/<contribution>/<split>-<n>[-last].arrow
                                               partial of one input object version, written by a mapper in
                                               one or more parts (a high-cardinality object spills parts to
                                               keep the mapper's memory bounded); complete when the part
                                               marked -last and every part before it are there
    jobs/<job>/quarantine/<contribution>.json  why an input object version could not be mapped
    jobs/<job>/manifest.json                   the commit point: which result and ledger are current
    jobs/<job>/results/<generation>-<token>.arrow   merged state (immutable; the manifest names the live one)
    jobs/<job>/ledger/<generation>-<token>.arrow    input object versions merged into that result

A contribution id is derived from (input key, version or ETag): a duplicated event rewrites the same partial,
and the ledger says whether it has been merged already.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass


def contribution_id(key: str, version: str) -> str:
    return hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()[:32]


def job_root(job: str) -> str:
    return f"jobs/{job}/"


def inbox_prefix(job: str) -> str:
    return f"jobs/{job}/inbox/"


@dataclass(frozen=True)
class Part:
    key: str
    contribution: str
    split: str
    index: int
    last: bool


def part_key(job: str, contribution: str, split: str, index: int, last: bool) -> str:
    return f"{inbox_prefix(job)}{contribution}/{split}-{index:05d}{'-last' if last else ''}.arrow"


def parse_part(key: str) -> Part:
    contribution, name = key.rsplit("/", 2)[-2:]
    stem = name.removesuffix(".arrow")
    last = stem.endswith("-last")
    split, index = stem.removesuffix("-last").rsplit("-", 1)
    return Part(key, contribution, split, int(index), last)


def complete_parts(parts: list[Part]) -> list[Part] | None:
    """The parts of one contribution that make it whole, or None while a mapper is still writing them."""
    by_split: dict[str, dict[int, Part]] = {}
    for part in parts:
        by_split.setdefault(part.split, {})[part.index] = part
    for split in sorted(by_split):
        indexed = by_split[split]
        last = [p for p in indexed.values() if p.last]
        if last and all(i in indexed for i in range(last[0].index + 1)):
            return [indexed[i] for i in range(last[0].index + 1)]
    return None


def quarantine_prefix(job: str) -> str:
    return f"jobs/{job}/quarantine/"


def quarantine_key(job: str, contribution: str) -> str:
    # Per version: a record stays true of its version, and status shows only versions still in the bucket.
    return f"{quarantine_prefix(job)}{contribution}.json"


def manifest_key(job: str) -> str:
    return f"jobs/{job}/manifest.json"


def results_prefix(job: str) -> str:
    return f"jobs/{job}/results/"


def ledger_prefix(job: str) -> str:
    return f"jobs/{job}/ledger/"


def generation_keys(job: str, generation: int) -> tuple[str, str]:
    """Fresh keys for a result and its ledger: unique per attempt, so racing reducers never share one."""
    token = uuid.uuid4().hex[:12]
    name = f"{generation:012d}-{token}.arrow"
    return results_prefix(job) + name, ledger_prefix(job) + name


def generation_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1].split("-", 1)[0])
