"""Rows as the API serves them, to Arrow (typed by the job's result schema) and to CSV (as exports write it).

The API writes JSON: exact decimals as numbers with every digit (read back as Decimal), dates and timestamps
as ISO text, lists and structs as JSON. Given the job's Arrow schema (GET /jobs: arrow_schema), each value is
turned back into its column's type, so `to_arrow()` types a result as its Parquet export does.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
from typing import IO, Any, Iterable, Sequence

from chalicelib.csvtext import csv_cell


def flat(row: dict[str, Any], scan: bool = False) -> dict[str, Any]:
    """An aggregation's {"key": {...}, "values": {...}} as one dict, key columns first; a scan row as it is."""
    return row if scan else {**row["key"], **row["values"]}


def schema_of(definition: dict[str, Any]):
    """The job's result schema from its description, or None from an API too old to give it."""
    import pyarrow as pa

    encoded = definition.get("arrow_schema")
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded))) if encoded else None


def to_arrow(rows: Sequence[dict[str, Any]], schema=None):
    import pyarrow as pa

    if schema is None:  # nothing to type by: Arrow infers (decimals stay exact, dates stay text)
        return pa.Table.from_pylist(list(rows))
    columns = [pa.array([_typed(row.get(f.name), f.type) for row in rows], f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _typed(value: Any, kind) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_date(kind):
        return dt.date.fromisoformat(value) if isinstance(value, str) else value
    if pa.types.is_timestamp(kind):
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_typed(item, kind.value_type) for item in value]
    if pa.types.is_struct(kind):
        return {field.name: _typed(value.get(field.name), field.type) for field in kind}
    return value


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str], schema=None, columns: Sequence[str] = ()) -> int:
    """A header, then one line per (flat) row, typed by `schema` when given (a float then reads back as the
    float it was, not the decimal text of it); returns the rows written."""
    names = list(schema.names) if schema is not None else list(columns)
    kinds = list(schema.types) if schema is not None else [None] * len(names)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    count = 0
    for row in rows:
        writer.writerow([csv_cell(row.get(name) if kind is None else _typed(row.get(name), kind))
                         for name, kind in zip(names, kinds)])
        count += 1
    return count
