"""Named inputs: a table is a prefix of the input bucket (optionally only keys ending in a suffix) and how its
objects parse. Jobs written in SQL read a table by name (`FROM uservisits`); Python jobs name a prefix and a
format directly. Tables are user configuration like jobs: `<jobs package>.tables` defines `TABLES`.
"""
from __future__ import annotations

import importlib
import re
from typing import Annotated, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import JobDefinitionError
from .formats import ParquetLayout, TextFormat, strip_compression

TABLES_MODULE = "tables"  # <jobs package>.tables: not a job module

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


class Table(BaseModel):
    """The objects under `prefix` whose key (without a compression extension such as .gz) ends with `suffix`,
    parsed as `format`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(min_length=1)
    suffix: str | None = None
    format: Format
    description: str = ""

    def matches(self, key: str) -> bool:
        if not key.startswith(self.prefix) or key.endswith("/"):
            return False
        return self.suffix is None or strip_compression(key).endswith(self.suffix)


def load_tables(package: str = "reducers") -> dict[str, Table]:
    """`<package>.tables.TABLES`: table name -> Table (or its dict); none when the package has no tables module."""
    try:
        module = importlib.import_module(f"{package}.{TABLES_MODULE}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{TABLES_MODULE}":
            raise
        return {}
    tables = {}
    for name, definition in getattr(module, "TABLES", {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise JobDefinitionError(f"table {name!r}: a table name is a SQL identifier (letters, digits, _)")
        try:
            tables[name] = definition if isinstance(definition, Table) else Table.model_validate(definition)
        except ValidationError as exc:
            raise JobDefinitionError(f"table {name!r}: {exc}") from exc
    return tables
