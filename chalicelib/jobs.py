"""Job definitions: pydantic models validated once when `reducers/` is loaded.

A job names the input objects it reads (prefix, optional suffix), how to parse them, and what to compute:
an aggregation (`keys` + `aggregates`) or a map-only scan (`select`, a projection), either after `filter`.
Loading compiles every expression against the declared columns, so a typo fails at load time with the
job's name, never inside a running mapper.
"""
from __future__ import annotations

import base64
import importlib
import pkgutil
import re
from functools import cached_property
from typing import Annotated, Any, Callable, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from .aggregation import AggregationPlan, parse_aggregate
from .aggregation.mapping import MapFunction
from .errors import JobDefinitionError, JobNotFound
from .expressions import compile_expression
from .formats import ParquetLayout, TextFormat, strip_compression
from .scan import ScanPlan
from .windows import WINDOW_KEY, Window

_SIMPLE_TYPES = {
    "string": pa.string(), "str": pa.string(), "int64": pa.int64(), "int": pa.int64(),
    "int32": pa.int32(), "float64": pa.float64(), "float": pa.float64(), "double": pa.float64(),
    "bool": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us"),
}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def arrow_type(name: str) -> pa.DataType:
    """Column type names used in job definitions: string, int64, float64, bool, date, timestamp,
    decimal(p,s). Declare money as decimal: its sums are exact."""
    text = name.strip().lower()
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    match = _DECIMAL.match(text)
    if match and 1 <= int(match[1]) <= 38 and int(match[2]) <= int(match[1]):
        return pa.decimal128(int(match[1]), int(match[2]))
    raise ValueError(f"unknown column type {name!r}; use one of {sorted(_SIMPLE_TYPES)} or decimal(p,s)")


class _Format(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: dict[str, str] = Field(min_length=1, description="column name -> type, in file order")
    on_bad_row: Literal["skip", "fail"] = "skip"

    @field_validator("columns")
    @classmethod
    def _types_are_known(cls, columns: dict[str, str]) -> dict[str, str]:
        for type_name in columns.values():
            arrow_type(type_name)
        return columns

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, arrow_type(t)) for name, t in self.columns.items()])


class CsvFormat(_Format):
    kind: Literal["csv"] = "csv"
    header: bool = False
    delimiter: str = Field(default=",", min_length=1, max_length=1)

    def reader(self) -> TextFormat:
        return TextFormat("csv", self.schema, self.header, self.delimiter, self.on_bad_row)


class JsonLinesFormat(_Format):
    kind: Literal["jsonl"] = "jsonl"

    def reader(self) -> TextFormat:
        return TextFormat("jsonl", self.schema, on_bad_row=self.on_bad_row)


class ParquetFormat(_Format):
    """Parquet objects. `columns` are the ones the job may use, with the types its expressions are checked
    against; each file's own schema must have them (by name, in any order, castable to the declared type)
    or the file is quarantined. Only the columns a job's expressions use are fetched from S3."""

    kind: Literal["parquet"] = "parquet"

    def reader(self) -> ParquetLayout:
        return ParquetLayout(self.schema)


Format = Annotated[Union[CsvFormat, JsonLinesFormat, ParquetFormat], Field(discriminator="kind")]


class Job(BaseModel):
    """`name` is the job's id in the API; input objects are those under `prefix` whose key (without a
    compression extension such as .gz) ends with `suffix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    prefix: str = Field(min_length=1)
    suffix: str | None = None
    format: Format
    filter: str | None = None
    keys: dict[str, str] | None = Field(default=None, min_length=1, description="group key name -> expression")
    aggregates: dict[str, str] | None = Field(default=None, min_length=1,
                                              description="output name -> aggregate(expression)")
    select: dict[str, str] | None = Field(default=None, min_length=1,
                                          description="map-only: output column -> expression")
    window: Window | None = Field(default=None, description="event-time tumbling window: adds key window_start")
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

    def model_post_init(self, _context: Any) -> None:
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
            columns = self.format.columns
            return ScanPlan(
                input_schema=self.format.schema,
                projection=tuple((name, compile_expression(source, columns)) for name, source in self.select.items()),
                filter=compile_expression(self.filter, columns) if self.filter else None,
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
        columns = schema.names
        keys = tuple((name, compile_expression(source, columns)) for name, source in self.keys.items())
        if self.window is not None:
            if WINDOW_KEY in self.keys:
                raise JobDefinitionError(f"{WINDOW_KEY!r} is the window's key; name the other keys otherwise")
            keys = ((WINDOW_KEY, self.window.expression(schema)), *keys)
        return AggregationPlan(
            input_schema=self.format.schema,
            keys=keys,
            aggregates=tuple(parse_aggregate(out, source, columns) for out, source in self.aggregates.items()),
            filter=compile_expression(self.filter, columns) if self.filter else None,
            map=mapped,
        )

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


def load_jobs(package: str = "reducers") -> JobCatalog:
    """Import every module of `package` not starting with `_`; each defines `JOB` (a Job or a dict)."""
    root = importlib.import_module(package)
    jobs = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        definition = getattr(module, "JOB", None)
        if definition is None:
            raise JobDefinitionError(f"{package}.{info.name} defines no JOB")
        try:
            jobs.append(definition if isinstance(definition, Job) else Job.model_validate(definition))
        except ValidationError as exc:
            raise JobDefinitionError(f"{package}.{info.name}: {exc}") from exc
    return JobCatalog(jobs)
