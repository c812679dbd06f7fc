"""Job definitions: pydantic models validated once when `reducers/` is loaded.

A job names the input objects it reads (prefix, optional suffix), how to parse them, and what to compute:
an aggregation (`keys` + `aggregates`, optionally `having`) or a map-only scan (`select`, a projection), either
after `filter`. Expressions are Python syntax (expressions.py) or, for jobs written in SQL (`Job.from_sql`, one
statement over a table of tables.py), SQL (chalicelib/sql). Loading compiles every expression against the
declared columns, so a typo fails at load time with the job's name, never inside a running mapper.
"""
from __future__ import annotations

import base64
import importlib
import pkgutil
import textwrap
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable, Literal, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from .aggregation import AggregationPlan, parse_aggregate
from .aggregation.mapping import MapFunction
from .errors import JobDefinitionError, JobNotFound
from .expressions import compile_expression
from .expressions import Expression
from .formats import strip_compression
from .scan import ScanPlan
from .sql.aggregates import parse_sql_aggregate
from .sql.expressions import compile_sql_expression
from .sql.statement import translate
from .tables import (TABLES_MODULE, CsvFormat, Format, JsonLinesFormat, ParquetFormat, Table,  # noqa: F401
                     arrow_type, load_tables)
from .windows import WINDOW_KEY, Window

class Job(BaseModel):
    """`name` is the job's id in the API; input objects are those under `prefix` whose key (without a
    compression extension such as .gz) ends with `suffix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    prefix: str = Field(min_length=1)
    suffix: str | None = None
    format: Format
    language: Literal["python", "sql"] = Field(
        default="python", description="the syntax of keys, aggregates, filter, select and having: Python's, or "
                                      "SQL's (DuckDB's dialect)")
    sql: str | None = Field(default=None, description="the SQL statement the job was defined by (Job.from_sql); "
                                                      "the other fields are derived from it")
    filter: str | None = None
    keys: dict[str, str] | None = Field(default=None, min_length=1, description="group key name -> expression")
    aggregates: dict[str, str] | None = Field(default=None, min_length=1,
                                              description="output name -> aggregate(expression)")
    select: dict[str, str] | None = Field(default=None, min_length=1,
                                          description="map-only: output column -> expression")
    having: str | None = Field(
        default=None, description="aggregations: a condition over the outputs (keys and aggregates, by name); the "
                                  "groups it does not hold for are kept but not served")
    window: Window | None = Field(default=None, description="event-time tumbling window: adds key window_start")
    window_key: str | None = Field(
        default=None, description="the key (a date or timestamp) that is an event-time window, which the API's "
                                  "window_from and window_to filter on; `window` makes it window_start")
    map: Callable[[pa.Table], Any] | None = Field(
        default=None, description="Python over each batch (the slower path); keys etc. then read its columns")
    map_columns: dict[str, str] | None = Field(default=None, description="the map function's output columns")
    map_reads: list[str] | None = Field(
        default=None, description="input columns the map function reads (default: all); the rest are not parsed")
    shards: int = Field(
        default=1, ge=1, le=256,
        description="aggregations: the result is kept in this many parts by key hash, each merged on its own and "
                    "in parallel; not part of the fingerprint, so a change re-partitions the kept result")

    @field_validator("map_columns")
    @classmethod
    def _map_types_are_known(cls, columns: dict[str, str] | None) -> dict[str, str] | None:
        for type_name in (columns or {}).values():
            arrow_type(type_name)
        return columns

    @field_serializer("map")
    def _map_name(self, function: Callable | None) -> str | None:
        return None if function is None else f"{function.__module__}.{function.__qualname__}"

    @classmethod
    def from_sql(cls, name: str, sql: str, tables: Mapping[str, Table], description: str = "",
                 shards: int = 1) -> "Job":
        """The job one SQL statement over `tables` asks for (README, "A job in SQL"). Raises
        JobDefinitionError naming the job, the construct and its line and column in `sql`."""
        try:
            query = translate(sql, tables)
            table = tables[query.table]
            return cls(name=name, description=description, prefix=table.prefix,
                       suffix=table.suffix, format=table.format, language="sql", sql=textwrap.dedent(sql).strip(),
                       shards=shards, **query.job_fields())
        except JobDefinitionError as exc:
            raise JobDefinitionError(f"job {name!r}: {exc}") from None
        except ValidationError as exc:
            raise JobDefinitionError(f"job {name!r}: {exc}") from None

    def model_post_init(self, _context: Any) -> None:
        if self.sql is not None and self.language != "sql":
            raise ValueError("a job defined by SQL has language='sql'")
        if self.having is not None and self.select is not None:
            raise ValueError("having filters groups: a scan (select) has none; filter its rows with filter")
        if self.select is not None and (self.keys is not None or self.aggregates is not None):
            raise ValueError("a job has either keys and aggregates (an aggregation) or select (a scan), not both")
        if self.select is None and (self.keys is None or self.aggregates is None):
            raise ValueError("a job needs keys and aggregates (an aggregation) or select (a scan)")
        if self.select is not None and self.shards != 1:
            raise ValueError("a scan (select) keeps a table of output files, not groups: it takes no shards")
        try:
            self.plan  # compile now: a bad expression fails validation, not a running mapper
        except JobDefinitionError as exc:
            raise ValueError(str(exc)) from exc

    @property
    def is_scan(self) -> bool:
        """Map-only: output rows per input object version, no reduce of values (see engine/scan.py)."""
        return self.select is not None

    @cached_property
    def plan(self) -> AggregationPlan | ScanPlan:
        if self.select is not None:
            if self.map is not None or self.window is not None:
                raise JobDefinitionError("a scan (select) takes neither a map function nor a window")
            schema = self.format.schema
            return ScanPlan(
                input_schema=schema,
                projection=tuple((name, self._compile(source, schema)) for name, source in self.select.items()),
                filter=self._compile(self.filter, schema) if self.filter else None,
                language=self.language,
            )
        if (self.map is None) != (self.map_columns is None):
            raise JobDefinitionError("a map function needs map_columns (its output columns and types), "
                                     "and map_columns need a map function")
        mapped = None
        if self.map is not None:
            unknown = set(self.map_reads or ()) - set(self.format.columns)
            if unknown:
                raise JobDefinitionError(f"map_reads names unknown columns {sorted(unknown)}")
            mapped = MapFunction(self.map, pa.schema([(n, arrow_type(t)) for n, t in self.map_columns.items()]),
                                 tuple(self.map_reads or self.format.columns))
        schema = mapped.output_schema if mapped else self.format.schema
        keys = tuple((name, self._compile(source, schema)) for name, source in self.keys.items())
        if self.window is not None:
            if WINDOW_KEY in self.keys:
                raise JobDefinitionError(f"{WINDOW_KEY!r} is the window's key; name the other keys otherwise")
            keys = ((WINDOW_KEY, self.window.expression(schema)), *keys)
        aggregate = parse_sql_aggregate if self.language == "sql" else (
            lambda out, source, schema: parse_aggregate(out, source, schema.names))
        plan = AggregationPlan(
            input_schema=self.format.schema,
            keys=keys,
            aggregates=tuple(aggregate(out, source, schema) for out, source in self.aggregates.items()),
            filter=self._compile(self.filter, schema) if self.filter else None,
            map=mapped,
            language=self.language,
        )
        self._check_window_key(plan)
        if self.having is None:
            return plan
        # The condition reads the finalized outputs, so it is compiled over their schema.
        return replace(plan, having=self._compile(self.having, plan.result_schema))

    def _compile(self, source: str, schema: pa.Schema) -> Expression:
        if self.language == "sql":
            return compile_sql_expression(source, schema)
        return compile_expression(source, schema.names)

    def _check_window_key(self, plan: AggregationPlan) -> None:
        if self.window_key is None:
            return
        if self.window is not None and self.window_key != WINDOW_KEY:
            raise JobDefinitionError(f"a job with a window has window_key {WINDOW_KEY!r}")
        if self.window_key not in plan.key_names:
            raise JobDefinitionError(f"window_key {self.window_key!r} is not a key ({', '.join(plan.key_names)})")
        kind = plan.state_schema.field(self.window_key).type
        if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
            raise JobDefinitionError(f"window_key {self.window_key!r} is {kind}, not a date or timestamp")

    @property
    def windowed_by(self) -> str | None:
        """The key the API's window_from and window_to filter on, if the job has an event-time window."""
        return WINDOW_KEY if self.window is not None else self.window_key

    def matches(self, key: str) -> bool:
        if not key.startswith(self.prefix) or key.endswith("/"):
            return False
        return self.suffix is None or strip_compression(key).endswith(self.suffix)

    @property
    def result_schema(self) -> pa.Schema:
        """The columns a result row has, as served and exported: keys then values, or a scan's selection."""
        return self.plan.output_schema if self.is_scan else self.plan.result_schema

    def describe(self) -> dict[str, Any]:
        schema = self.result_schema
        # columns for people; arrow_schema (Arrow IPC, base64) so a client types rows exactly as exports are.
        return {**self.model_dump(mode="json"), "kind": "scan" if self.is_scan else "aggregation",
                "fingerprint": self.plan.fingerprint, "columns": {f.name: str(f.type) for f in schema},
                "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode()}


class JobCatalog:
    """All jobs, by name. Several jobs may read the same prefix."""

    def select(self, names: str) -> "JobCatalog":
        """The jobs named in a comma-separated list (all of them for an empty one)."""
        wanted = [name.strip() for name in names.split(",") if name.strip()]
        return JobCatalog([self.get(name) for name in wanted]) if wanted else self

    def __init__(self, jobs: list[Job]):
        self._jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self._jobs:
                raise JobDefinitionError(f"two jobs are named {job.name!r}")
            self._jobs[job.name] = job

    def __iter__(self):
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise JobNotFound(name) from None

    def for_key(self, key: str) -> list[Job]:
        return [job for job in self._jobs.values() if job.matches(key)]


@dataclass(frozen=True)
class Definitions:
    """What a jobs package defines, and an error for each definition that does not load."""

    jobs: list[Job]
    tables: dict[str, Table]
    errors: list[str]


def load_jobs(package: str = "reducers") -> JobCatalog:
    """Import every module of `package` not starting with `_` (but its `tables`); each defines `JOB`: a Job, a
    dict of its fields, or a dict of `from_sql`'s arguments (name, sql, description, shards) over the package's
    tables."""
    definitions = read_definitions(package)
    if definitions.errors:
        raise JobDefinitionError("\n".join(definitions.errors))
    return JobCatalog(definitions.jobs)


def read_definitions(package: str = "reducers") -> Definitions:
    """Every job and table of `package`; a definition that does not load is an error naming it (`tally
    validate` reports them all), not the end of the loading."""
    errors: list[str] = []
    try:
        tables = load_tables(package)
    except JobDefinitionError as exc:
        tables = {}
        errors.append(f"{package}.{TABLES_MODULE}: {exc}")
    root = importlib.import_module(package)
    jobs: dict[str, Job] = {}
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == TABLES_MODULE:
            continue
        where = f"{package}.{info.name}"
        try:
            definition = getattr(importlib.import_module(where), "JOB", None)
            if definition is None:
                raise JobDefinitionError("defines no JOB")
            job = _job(definition, tables)
        except ValidationError as exc:
            errors.append(f"{where}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001  (a module that fails to import is that job's error, reported)
            errors.append(f"{where}: {exc}" if isinstance(exc, JobDefinitionError) else
                          f"{where}: {type(exc).__name__}: {exc}")
            continue
        if job.name in jobs:
            errors.append(f"{where}: two jobs are named {job.name!r}")
        jobs[job.name] = job
    return Definitions(list(jobs.values()), tables, errors)


def _job(definition: Job | dict, tables: dict[str, Table]) -> Job:
    if isinstance(definition, Job):
        return definition
    if isinstance(definition, dict) and "sql" in definition and "format" not in definition:
        return Job.from_sql(tables=tables, **definition)
    try:
        return Job.model_validate(definition)
    except ValidationError as exc:
        name = definition.get("name") if isinstance(definition, dict) else None
        raise JobDefinitionError(f"job {name!r}: {exc}" if name else str(exc)) from None
