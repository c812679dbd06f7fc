"""Fault injection at the storage seam: wrap a real (moto-backed) ObjectStore and kill the process at a chosen
call, before or after the call takes effect, the way a Lambda timeout or OOM would."""
from __future__ import annotations


class Killed(BaseException):
    """A crash: BaseException so no `except Exception` in the engine can swallow it."""


class FaultyStore:
    def __init__(self, store, operation: str, *, after: bool = True, nth: int = 1, key_contains: str = ""):
        self._store, self._operation, self._after, self._nth = store, operation, after, nth
        self._key_contains = key_contains
        self.calls = 0
        self.bucket = store.bucket

    def __getattr__(self, name):
        target = getattr(self._store, name)
        if name != self._operation:
            return target

        def call(*args, **kwargs):
            key = args[0] if args else ""
            if self._key_contains not in str(key):
                return target(*args, **kwargs)
            self.calls += 1
            if self.calls == self._nth and not self._after:
                raise Killed(f"killed before {name}({key!r})")
            result = target(*args, **kwargs)
            if self.calls == self._nth:
                raise Killed(f"killed after {name}({key!r})")
            return result

        return call


class LostResponse:
    """A store whose conditional write (`operation` on a key containing `key_contains`) applies, but whose
    response is lost: botocore retries, the retry meets the condition the first attempt changed, and the caller
    sees a 412 (CommitConflict) for a write that took effect. S3 documents that a 500 may or may not have
    applied a write; botocore retries 500s and read timeouts."""

    def __init__(self, store, operation: str, *, key_contains: str = "", times: int = 1):
        self._store, self._operation, self._key_contains, self._times = store, operation, key_contains, times
        self.lost = 0
        self.bucket = store.bucket

    def __getattr__(self, name):
        target = getattr(self._store, name)
        if name != self._operation:
            return target

        def call(*args, **kwargs):
            key = args[0] if args else ""
            result = target(*args, **kwargs)
            if self._key_contains in str(key) and self.lost < self._times:
                self.lost += 1
                from chalicelib.errors import CommitConflict

                raise CommitConflict(f"s3://{self.bucket}/{key}: PreconditionFailed (the retry of an applied write)")
            return result

        return call
