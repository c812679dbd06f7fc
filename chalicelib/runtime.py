"""Builds everything once per process (a Lambda container, a local worker) from validated Settings."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from .engine.export import Exporter
from .engine.fanout import Dispatch
from .engine.mapper import Mapper
from .engine.reconcile import ObjectDispatch, Reconciler
from .engine.reducer import Reducer
from .engine.results import ResultReader
from .engine.scan_results import ScanReader
from .engine.status import StatusReader
from .engine.views import LiveCatalog, ViewStore
from .jobs import Job, JobCatalog, load_jobs
from .tables import load_tables
from .settings import Settings
from .storage import S3ObjectStore, make_s3_client


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Runtime:
    settings: Settings
    s3_client: object | None = None  # injected in tests; built from settings otherwise
    # Where the mapper sends range tasks of large objects: local mode's worker pool, a test's list. Otherwise
    # the map_range Lambda when settings name one, else this process maps them itself.
    dispatch: Dispatch | None = None
    # Where the reconcile sends the object versions it finds unmapped: local mode's worker queue, a test's list.
    # Otherwise the map_object Lambda when settings name one, else the reconcile maps them in this process.
    object_dispatch: ObjectDispatch | None = None
    # The jobs to run; None loads them from `settings.jobs_package` (a test passes its own).
    catalog: JobCatalog | None = None
    # The time every part takes its timestamps from (a test's fake clock, shared with its fake S3).
    clock: Callable[[], dt.datetime] = utc_now

    @cached_property
    def client(self):
        return self.s3_client or make_s3_client(self.settings.s3_endpoint, self.settings.region)

    @cached_property
    def jobs(self) -> JobCatalog:
        """The jobs in code and the views created at run time (engine/views.py); `catalog`, if given, alone."""
        if self.catalog is not None:
            return self.catalog
        package = self.settings.jobs_package
        code = load_jobs(package).select(self.settings.jobs)
        tables = load_tables(package)
        return LiveCatalog(code, ViewStore(self.state_store, self.clock),
                           lambda name, sql: Job.from_sql(name, sql, tables),
                           ttl=self.settings.view_refresh_seconds)

    @cached_property
    def input_store(self) -> S3ObjectStore:
        return S3ObjectStore(self.settings.input_bucket, self.client)

    @cached_property
    def state_store(self) -> S3ObjectStore:
        return S3ObjectStore(self.settings.state_bucket, self.client)

    @cached_property
    def mapper(self) -> Mapper:
        return Mapper(self.jobs, self.input_store, self.state_store, self.clock, self.settings.map_max_groups,
                      split_bytes=self.settings.split_bytes, dispatch=self.dispatch or self._lambda_dispatch(),
                      read_streams=self.settings.read_streams, max_attempts=self.settings.map_max_attempts,
                      max_seconds=self.settings.map_max_seconds,
                      max_decompressed=self.settings.map_max_decompressed_bytes)

    def _lambda_dispatch(self) -> Dispatch | None:
        if not self.settings.range_function:
            return None
        from .invoke import LambdaRangeInvoker

        return LambdaRangeInvoker(self.settings.range_function, self.lambda_client)

    def _lambda_object_dispatch(self) -> ObjectDispatch | None:
        if not self.settings.object_function:
            return None
        from .invoke import LambdaObjectInvoker

        return LambdaObjectInvoker(self.settings.object_function, self.lambda_client)

    @cached_property
    def lambda_client(self):
        from .invoke import make_lambda_client

        return make_lambda_client(self.settings.region)

    @cached_property
    def reducer(self) -> Reducer:
        return Reducer(self.jobs, self.state_store, self.input_store, self.clock, self.settings.reduce_batch,
                       self.settings.reduce_parallelism, self.settings.shard_groups, self.settings.reduce_max_groups)

    @cached_property
    def reconciler(self) -> Reconciler:
        return Reconciler(self.jobs, self.input_store, self.state_store, self.mapper, self.reducer, self.clock,
                          dispatch=self.object_dispatch or self._lambda_object_dispatch(),
                          garbage_grace=dt.timedelta(minutes=self.settings.garbage_grace_minutes))

    @cached_property
    def results(self) -> ResultReader:
        return ResultReader(self.reducer)

    @cached_property
    def scan_results(self) -> ScanReader:
        return ScanReader(self.reducer)

    @cached_property
    def exporter(self) -> Exporter:
        return Exporter(self.state_store, self.reducer, self.results, self.clock,
                        garbage_grace=dt.timedelta(minutes=self.settings.garbage_grace_minutes))

    @cached_property
    def status(self) -> StatusReader:
        return StatusReader(self.reducer, self.input_store, self.state_store, self.clock)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use so importing app.py stays cheap (Lambda cold start)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(Settings.from_env())
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Swap the process-wide runtime (tests, local mode)."""
    global _runtime
    _runtime = runtime
