"""Faults and interleavings at the storage seam: wrap a real (moto-backed) ObjectStore and make one of its calls
crash the process (before or after it takes effect, as a Lambda timeout or OOM would), lose its response, or
let other processes act just before it."""
from __future__ import annotations

from chalicelib.errors import CommitConflict


class Killed(BaseException):
    """A crash: BaseException so no `except Exception` in the engine can swallow it."""


class Intercepted:
    """A store whose calls of `operation` (every call, for None) on keys containing `key_contains` go through
    `intercept(call, key)`; everything else passes straight through."""

    def __init__(self, store, operation: str | None, key_contains: str = ""):
        self._store, self._operation, self._key_contains = store, operation, key_contains
        self.bucket = store.bucket

    def __getattr__(self, name):
        target = getattr(self._store, name)
        if not callable(target) or self._operation not in (None, name):
            return target

        def call(*args, **kwargs):
            key = str(args[0] if args else kwargs.get("prefix", ""))
            if self._key_contains not in key:
                return target(*args, **kwargs)
            return self.intercept(lambda: target(*args, **kwargs), f"{name}({key!r})")

        return call

    def intercept(self, call, what: str):
        raise NotImplementedError


class FaultyStore(Intercepted):
    """Kills the process at the `nth` matching call, before or `after` it takes effect."""

    def __init__(self, store, operation: str, *, after: bool = True, nth: int = 1, key_contains: str = ""):
        super().__init__(store, operation, key_contains)
        self._after, self._nth = after, nth
        self.calls = 0

    def intercept(self, call, what: str):
        self.calls += 1
        if self.calls == self._nth and not self._after:
            raise Killed(f"killed before {what}")
        result = call()
        if self.calls == self._nth:
            raise Killed(f"killed after {what}")
        return result


class LostResponse(Intercepted):
    """A conditional write that applies, but whose response is lost: botocore retries, the retry meets the
    condition the first attempt changed, and the caller sees a 412 (CommitConflict) for a write that took
    effect. S3 documents that a 500 may or may not have applied a write; botocore retries 500s and read
    timeouts."""

    def __init__(self, store, operation: str, *, key_contains: str = "", times: int = 1):
        super().__init__(store, operation, key_contains)
        self._times = times
        self.lost = 0

    def intercept(self, call, what: str):
        result = call()
        if self.lost >= self._times:
            return result
        self.lost += 1
        raise CommitConflict(f"{what}: PreconditionFailed (the retry of an applied write)")


class Before(Intercepted):
    """Runs `action` once, just before the `nth` matching call: the moment another process acts between two of
    this one's S3 calls. Calls on the stores that share `counter` count together (a run's input and state)."""

    def __init__(self, store, action, *, operation: str | None = None, nth: int = 1, key_contains: str = "",
                 counter: dict | None = None):
        super().__init__(store, operation, key_contains)
        self._action, self._nth = action, nth
        self.counter = counter if counter is not None else {"calls": 0}
        self.fired = False

    def intercept(self, call, what: str):
        self.counter["calls"] += 1
        if self.counter["calls"] == self._nth and not self.fired:
            self.fired = True
            self._action()
        return call()
