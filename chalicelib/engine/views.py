"""Views created at run time: SQL job definitions kept, versioned, in the state bucket.

    views/<name>/<version>.json      {"name", "sql", "version", "at", "dropped"}

Creating a view writes its next version with If-None-Match: of two creators of one name, one wins. Dropping
writes the next version marked dropped; the latest version of a name is what the name is. Jobs defined in code
(`reducers/`) can be neither shadowed nor dropped. Mappers, reducers, the reconcile and the API see views
through a `LiveCatalog`, which lists the definitions again at most every `ttl` (a minute on Lambda, at once in
local mode), so a new view is picked up within a minute and the reconcile backfills it from the objects already
in its prefix.

A dropped view's state (`jobs/<name>/…`) is deleted by the reconcile once the drop is older than the garbage
grace (docs/deletion.md): by then no mapper or reducer that still knew the view can be running. Until then the
name cannot be taken again, so a new view of that name never meets the old one's state.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator

from ..errors import CommitConflict, InvalidQuery, JobDefinitionError, JobNotFound
from ..jobs import Job, JobCatalog
from ..storage import ObjectStore
from . import layout

log = logging.getLogger("tally.reconcile")

Compile = Callable[[str, str], Job]  # (name, sql) -> the job; raises JobDefinitionError


class NameTaken(InvalidQuery):
    """A view's name is a job's already (in code, a live view, or a view whose state is still being dropped)."""


@dataclass(frozen=True)
class ViewRecord:
    name: str
    sql: str
    version: int
    at: str
    dropped: bool = False
    key: str = ""  # where it was read from (not stored)

    def encode(self) -> bytes:
        fields = asdict(self)
        del fields["key"]
        return json.dumps(fields, sort_keys=True).encode()

    def dropped_description(self) -> dict:
        return {"job": self.name, "dropped": self.dropped, "version": self.version, "at": self.at,
                "state": "deleted once the drop is older than the garbage grace (an hour by default)"}


class ViewStore:
    """The definitions in the state bucket: one LIST for every name's versions, one GET for each latest one
    (records are immutable, so a GET is cached for good)."""

    def __init__(self, store: ObjectStore, clock: Callable[[], datetime]):
        self.store, self.clock = store, clock
        self._read: dict[str, ViewRecord] = {}

    def latest(self) -> dict[str, ViewRecord]:
        newest: dict[str, str] = {}
        for obj in self.store.list(layout.views_prefix()):
            name = layout.view_of(obj.key)
            newest[name] = max(newest.get(name, ""), obj.key)  # versions are zero-padded: they sort
        return {name: self._get(key) for name, key in newest.items()}

    def put(self, name: str, sql: str, dropped: bool, after: ViewRecord | None) -> ViewRecord:
        """Writes the version after `after` (the latest one read); CommitConflict if another writer took it."""
        version = (after.version if after else 0) + 1
        record = ViewRecord(name, sql, version, self.clock().isoformat(), dropped,
                            layout.view_key(name, version))
        self.store.put_if_absent(record.key, record.encode(), "application/json")
        self._read[record.key] = record
        return record

    def _get(self, key: str) -> ViewRecord:
        if key not in self._read:
            fields = json.loads(self.store.get(key)[0])
            self._read[key] = ViewRecord(**fields, key=key)
        return self._read[key]


class LiveCatalog(JobCatalog):
    """The jobs in code and the live views, the latter listed again at most every `ttl` seconds. A view whose
    definition no longer compiles (a table renamed in code) is left out, with an error in the log."""

    def __init__(self, code: JobCatalog, views: ViewStore, compile: Compile, ttl: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic):
        super().__init__(list(code))
        self.code, self.views, self.compile, self.ttl, self.monotonic = code, views, compile, ttl, monotonic
        self._lock = threading.Lock()
        self._views: dict[str, Job] = {}
        self._compiled: dict[str, Job] = {}  # by record key: a definition compiles once
        self._listed_at: float | None = None

    # -- what JobCatalog answers, views included --------------------------------------------------------------

    def __iter__(self) -> Iterator[Job]:
        return iter([*self.code, *self._current().values()])

    def __len__(self) -> int:
        return len(self.code) + len(self._current())

    def get(self, name: str) -> Job:
        views = self._current()
        if name in views:
            return views[name]
        return self.code.get(name)

    def for_key(self, key: str) -> list[Job]:
        return [*self.code.for_key(key), *(job for job in self._current().values() if job.matches(key))]

    def is_view(self, name: str) -> bool:
        return name in self._current()

    # -- creating and dropping --------------------------------------------------------------------------------

    def create(self, name: str, sql: str) -> Job:
        """Compiles and stores a view; InvalidQuery (a 400) for SQL that does not compile or a name taken."""
        if name in self._names_in_code():
            raise NameTaken(f"{name!r} is a job defined in code")
        try:
            job = self.compile(name, sql)
        except JobDefinitionError as error:
            raise InvalidQuery(str(error)) from error
        latest = self.views.latest().get(name)
        if latest is not None and not latest.dropped:
            raise NameTaken(f"a view named {name!r} exists already")
        if latest is not None and self._state_left(name):
            raise NameTaken(f"the view {name!r} was dropped at {latest.at}; its state is deleted an hour after "
                            "the drop, and the name is free again then")
        try:
            self.views.put(name, sql, False, latest)
        except CommitConflict:
            raise NameTaken(f"a view named {name!r} was created meanwhile") from None
        self.refresh()
        return job

    def drop(self, name: str) -> ViewRecord:
        if name in self._names_in_code():
            raise InvalidQuery(f"{name!r} is defined in code (reducers/): remove it there and deploy")
        latest = self.views.latest().get(name)
        if latest is None or latest.dropped:
            raise JobNotFound(name)
        try:
            record = self.views.put(name, latest.sql, True, latest)
        except CommitConflict:
            raise InvalidQuery(f"the view {name!r} changed meanwhile; try again") from None
        self.refresh()
        return record

    def refresh(self) -> None:
        with self._lock:
            self._listed_at = None
        self._current()

    # -- the dropped views' state ---------------------------------------------------------------------------

    def collect_dropped(self, grace: timedelta, now: datetime) -> int:
        """Deletes the state of views dropped longer than `grace` ago (mappers and reducers that knew them are
        done by then): the objects under `jobs/<name>/`. Returns how many."""
        deleted = 0
        for name, record in self.views.latest().items():
            if not record.dropped or now - datetime.fromisoformat(record.at) <= grace:
                continue
            keys = [o.key for o in self.views.store.list(layout.job_prefix(name))]
            # Read after the listing: a view of that name created since (once an overlapping collector emptied
            # the prefix) owns what is there now. While listed keys remain, the name cannot be taken.
            if keys and self.views.latest().get(name) == record:
                self.views.store.delete(keys)
                deleted += len(keys)
                log.info("deleted a dropped view's state", extra={"job": name, "objects": len(keys)})
        return deleted

    # -- internals -------------------------------------------------------------------------------------------

    def _current(self) -> dict[str, Job]:
        with self._lock:
            fresh = self._listed_at is not None and self.monotonic() - self._listed_at < self.ttl
            if fresh:
                return self._views
        records = self.views.latest()
        views = {}
        for name, record in records.items():
            if record.dropped or name in self._names_in_code():
                continue
            job = self._compiled.get(record.key)
            if job is None:
                try:
                    job = self.compile(name, record.sql)
                except JobDefinitionError as error:
                    log.error("a view does not compile any more; left out", extra={"job": name,
                                                                                  "error": str(error)})
                    continue
                self._compiled[record.key] = job
            views[name] = job
        with self._lock:
            self._views, self._listed_at = views, self.monotonic()
        return views

    def _names_in_code(self) -> set[str]:
        return {job.name for job in self.code}

    def _state_left(self, name: str) -> bool:
        return next(iter(self.views.store.list(layout.job_prefix(name), page_size=1)), None) is not None

