"""One error tree. Each error says what went wrong and carries its cause; the HTTP layer maps classes to
status codes, the mapper maps BadInput to quarantine, and any other exception fails that job's attempt at the
object, so Lambda retries, until too many attempts quarantine it too (engine/attempts.py)."""
from __future__ import annotations


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""


class InvalidSettings(TallyError):
    """The TALLY_* environment does not validate, or asks for something unsafe where it runs; raised when the
    settings are read (a Lambda's cold start), never later."""


class JobDefinitionError(TallyError):
    """A job in reducers/ does not validate; raised at load time, never at run time."""


class JobNotFound(TallyError):
    def __init__(self, job: str):
        super().__init__(f"no job named {job!r}")
        self.job = job


class GroupNotFound(TallyError):
    def __init__(self, job: str, key: object):
        super().__init__(f"job {job!r} has no group {key!r}")


class InvalidQuery(TallyError):
    """A request parameter that cannot be honoured (HTTP 400)."""


class BadInput(TallyError):
    """An input object that cannot be mapped: it is quarantined, not retried."""

    def __init__(self, reason: str, *, line: int | None = None, offset: int | None = None):
        where = []
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(reason + (f" (at {', '.join(where)})" if where else ""))
        self.reason = reason
        self.line = line
        self.offset = offset


class ReadFailed(TallyError):
    """Reading an input object from its store failed (a connection reset, a timeout): not the object's fault.
    Its attempt fails without counting against it, and the invocation is retried."""


class OverBudget(BadInput):
    """An object that needs more than a per-object budget (bytes decompressed, seconds of mapping): it would
    need as much on every attempt, so it is quarantined at once, with what was seen and the setting to raise."""


class MapFunctionFailed(TallyError):
    """A job's map function returned something other than its declared columns: a bug in the job, so that job's
    attempt fails instead of guessing (and after TALLY_MAP_MAX_ATTEMPTS failures the object is quarantined for
    that job)."""


class MappingFailed(TallyError):
    """Some jobs could not map some records of an event, after every other record and job was mapped: the
    invocation fails so Lambda delivers the event again. `outcomes` are what was done, failures included."""

    def __init__(self, failures: list[str], outcomes: list):
        super().__init__(f"{len(failures)} failed: " + "; ".join(failures))
        self.failures = failures
        self.outcomes = outcomes


class PartialMismatch(TallyError):
    """Encoded state written for another job definition or format version: merging it would be wrong."""


class CommitConflict(TallyError):
    """A conditional write lost a race (S3 412): another writer committed first."""


class ObjectMissing(TallyError):
    def __init__(self, bucket: str, key: str):
        super().__init__(f"s3://{bucket}/{key} does not exist")
        self.bucket = bucket
        self.key = key


class DispatchFailed(TallyError):
    """A range task or a reconciled object could not be handed to its mapper (the invocation was refused): the
    object's event, or that job's reconcile, fails, so it is delivered or tried again."""


class StateMissing(TallyError):
    """An object the committed state names does not exist, and the manifest has not moved on since it was read:
    not a lost race but lost state (deleted by hand, by a lifecycle rule, or by a bug). Reported as an error
    with a metric; lost partials are repaired (engine/repair.py), a lost ledger or result needs
    `tally repair --reset`."""

    def __init__(self, job: str, key: str):
        super().__init__(f"job {job!r}: the committed state names {key}, which does not exist")
        self.job = job
        self.key = key


class ReduceFailed(TallyError):
    """One or more jobs failed in a reducer run (each job's error is in its report); the others went on."""
