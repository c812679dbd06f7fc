"""Attempts at mapping an object version, counted in the state bucket, so that an object that fails every time
(a poison object: an overflow, a user aggregate or map function raising on one of its rows, a read killed by
Lambda's timeout or by running out of memory) is quarantined after a few attempts, instead of being retried,
dropped and handed over again by every reconcile, forever.

    attempts/<subject>/<attempt>.json

One record per attempt of a job group (the jobs that share one parse of the version: one record for them all,
not one per job), written before the attempt reads the object. `subject` is the contribution id, or
`<contribution>.r<i>of<n>` for one range of a large object (each range is an invocation of its own, retried on
its own). The record names the jobs the attempt maps and when it started. An attempt that ends with a job
failed, or quarantined for its failures, rewrites its record as finished: each failed job's reason, and what it
settled for the others (`done`: its marker is written, or the version was superseded or found bad;
`quarantined`). A retry skips the jobs an earlier attempt settled.

Counting, per job, over the records of earlier attempts: a finished record naming the job failed is one
failure, and so is an unfinished record older than the mapping time budget, whose attempt was killed (an
attempt still running stops itself at the budget and quarantines). A younger unfinished record is an attempt in
flight, a duplicate delivery: neither counted nor touched. A failure of S3 or the network says nothing about
the object and is not counted. A job with `max_attempts` failures is quarantined instead of mapped again.

The common path, one attempt that maps every job: a LIST (empty), a PUT, and once its markers are written the
DELETE of its own record, per job group.

Records are counters, not data: deleting one early costs at most another attempt, never a result. They still
follow docs/deletion.md. Once every job of its group is done, an attempt deletes its own record, and the records
it read of earlier attempts that can no longer change (finished, or dead) and name only jobs now done. While a
job is failing or was quarantined for its failures the records stay: a later delivery of the same version then
quarantines it again at once, rather than spending another round of attempts. A concurrent duplicate that
listed a record before it was deleted counts it anyway; one that lists after counts fewer failures, and at
worst makes one more attempt. What is left behind (a version replaced before it was settled, or quarantined; an
attempt killed between its markers and its clean-up) is swept by the reconcile once it is old and a HEAD made
after the listing shows its version is no longer the object's current one.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

from ..errors import ObjectMissing, ReadFailed
from ..storage import ObjectStore
from . import layout

log = logging.getLogger("tally.attempts")

DONE, QUARANTINED = "done", "quarantined"
# Exceptions from these libraries are S3 or the network failing (boto3 wraps its errors in classes of its own,
# generated at run time; the engine does not import them), not the object.
_TRANSPORT = frozenset({"botocore", "boto3", "urllib3", "s3transfer"})


def counts(error: BaseException) -> bool:
    """Whether a failure counts against the object: not when storage or the network failed."""
    if isinstance(error, (ConnectionError, TimeoutError, ReadFailed)):
        return False
    return not any(cls.__module__.split(".", 1)[0] in _TRANSPORT for cls in type(error).__mro__)


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:500]}" if text else type(error).__name__


@dataclass(frozen=True)
class Record:
    key: str
    jobs: tuple[str, ...]
    started: datetime
    finished: datetime | None = None
    failed: Mapping[str, str] = field(default_factory=dict)  # job -> reason (type and message)
    settled: Mapping[str, str] = field(default_factory=dict)  # job -> DONE | QUARANTINED

    def dead(self, now: datetime, budget: timedelta) -> bool:
        return self.finished is None and now - self.started > budget


@dataclass(frozen=True)
class Failures:
    """A job's failed attempts at one subject so far, and the reason to quarantine it with."""

    attempts: int
    reason: str


@dataclass
class Attempt:
    subject: str
    key: str
    about: dict
    started: datetime
    jobs: tuple[str, ...]  # the jobs it maps
    earlier: tuple[Record, ...]
    before: dict[str, Failures]  # each job's failures in earlier attempts
    exhausted: dict[str, Failures]  # jobs not mapped again: quarantine them
    settled_before: dict[str, str]  # jobs an earlier attempt settled: skipped
    dead: frozenset[str] = frozenset()  # keys of earlier records whose attempts were killed
    written: bool = False


class AttemptLog:
    """Reads and writes attempt records; pure over an ObjectStore, the clock is the caller's."""

    def __init__(self, store: ObjectStore, max_attempts: int = 3, budget: timedelta = timedelta(seconds=720)):
        self.store, self.max_attempts, self.budget = store, max_attempts, budget

    def start(self, subject: str, jobs: list[str], about: dict, now: datetime) -> Attempt:
        """Read the earlier attempts (a LIST, and a GET each: none on the common path), then record this one (a
        PUT) unless every job is settled or exhausted."""
        earlier = tuple(self._read(subject))
        before = {job: self._failures(job, earlier, now) for job in jobs}
        settled = {job: how for record in earlier for job, how in record.settled.items() if job in jobs}
        exhausted = {job: f for job, f in before.items() if job not in settled and f.attempts >= self.max_attempts}
        attempt = Attempt(subject, layout.attempt_key(subject, layout.new_attempt()), about, now,
                          tuple(job for job in jobs if job not in settled and job not in exhausted), earlier,
                          before, exhausted, settled,
                          frozenset(r.key for r in earlier if r.dead(now, self.budget)))
        if attempt.jobs:
            self._write(attempt, {"jobs": list(attempt.jobs), "started": now.isoformat()})
            attempt.written = True
        return attempt

    def judge(self, attempt: Attempt, failed: Mapping[str, BaseException]) -> dict[str, Failures]:
        """The failed jobs that have now failed `max_attempts` times: to be quarantined, not retried."""
        exhausted = {}
        for job, error in failed.items():
            if counts(error):
                attempts = attempt.before[job].attempts + 1
                if attempts >= self.max_attempts:
                    exhausted[job] = Failures(attempts, describe(error))
        return exhausted

    def finish(self, attempt: Attempt, failed: Mapping[str, BaseException], quarantined: Mapping[str, Failures],
               now: datetime) -> None:
        """After the markers and quarantine records are written: forget the attempts if every job is done, else
        leave what a retry (or a later delivery) needs to know."""
        quarantined = {**attempt.exhausted, **quarantined}
        if not failed and not quarantined and QUARANTINED not in attempt.settled_before.values():
            done = set(attempt.jobs) | set(attempt.settled_before)
            stale = [r.key for r in attempt.earlier
                     if (r.finished is not None or r.key in attempt.dead) and set(r.jobs) <= done]
            self.store.delete(([attempt.key] if attempt.written else []) + stale)
            return
        if not attempt.written:
            return  # it mapped nothing: the earlier records already say all it knows
        settled = {job: DONE for job in attempt.jobs if job not in failed}
        settled.update({job: QUARANTINED for job in quarantined})
        self._write(attempt, {
            "jobs": list(attempt.jobs), "started": attempt.started.isoformat(), "finished": now.isoformat(),
            "failed": {job: describe(error) for job, error in failed.items() if counts(error)},
            "settled": settled})

    def sweep(self, input_store: ObjectStore, now: datetime, older_than: timedelta) -> int:
        """Delete the records of versions that are no longer their object's current one, once every record of
        the subject is older than `older_than` (no attempt at it can still be running). Returns how many."""
        subjects: dict[str, list] = {}
        for obj in self.store.list(layout.attempts_prefix()):
            subjects.setdefault(layout.attempt_subject_of(obj.key), []).append(obj)
        deleted = 0
        for subject, listed in subjects.items():
            if any(o.last_modified is None or now - o.last_modified < older_than for o in listed):
                continue
            about = self._about(listed)
            # Read after the listing: a version no longer current is never handed over again.
            current = None if about is None else input_store.head(about["key"])
            if about is None or current is None or current.etag != about["etag"]:
                self.store.delete([o.key for o in listed])
                deleted += len(listed)
        return deleted

    def _failures(self, job: str, earlier: tuple[Record, ...], now: datetime) -> Failures:
        recorded = sorted((r for r in earlier if job in r.failed), key=lambda r: r.finished)
        killed = sum(1 for r in earlier if job in r.jobs and r.dead(now, self.budget))
        attempts = len(recorded) + killed
        if recorded:
            return Failures(attempts, recorded[-1].failed[job])
        return Failures(attempts, f"{attempts} attempts did not finish (timeout or out of memory)")

    def _read(self, subject: str) -> list[Record]:
        records = []
        for obj in self.store.list(layout.attempts_prefix(subject)):
            try:
                body = json.loads(self.store.get(obj.key)[0])
            except ObjectMissing:
                continue  # forgotten by a successful attempt meanwhile
            records.append(Record(obj.key, tuple(body["jobs"]), datetime.fromisoformat(body["started"]),
                                  datetime.fromisoformat(body["finished"]) if body.get("finished") else None,
                                  body.get("failed", {}), body.get("settled", {})))
        return records

    def _about(self, listed) -> dict | None:
        for obj in listed:
            try:
                return json.loads(self.store.get(obj.key)[0])
            except ObjectMissing:
                continue
        return None

    def _write(self, attempt: Attempt, body: dict) -> None:
        self.store.put(attempt.key, json.dumps({**attempt.about, **body}).encode(), "application/json")
