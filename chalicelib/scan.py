"""Map-only jobs as data: a filter and a projection, applied batch by batch, and their output files' codec.

A scan job's output for one input object version is that version's rows passing the filter, projected; they
are written as Parquet (zstd) so any engine (DuckDB, Athena, Spark, pyarrow) reads the live files directly,
only the columns it needs. Each file carries the plan's fingerprint, as partials do, so output written for
another definition of the job is refused instead of served.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobDefinitionError, PartialMismatch
from .expressions import Expression

# Bump when the meaning of output files changes, so files of the old format are never served as current.
SCAN_FORMAT = 1
_FINGERPRINT = b"tally.fingerprint"


@dataclass(frozen=True)
class ScanPlan:
    input_schema: pa.Schema
    projection: tuple[tuple[str, Expression], ...]
    filter: Expression | None = None
    language: str = "python"  # of the expressions' source text, which the fingerprint holds
    output_schema: pa.Schema = field(init=False, compare=False)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.projection]
        if not names:
            raise JobDefinitionError("a scan job selects at least one column")
        if any(name.startswith("__") for name in names):
            raise JobDefinitionError("names starting with '__' are reserved for Tally's working columns")
        empty = self.input_schema.empty_table()
        try:
            if self.filter is not None and not pa.types.is_boolean(self.filter.evaluate_array(empty).type):
                raise JobDefinitionError(f"filter {self.filter.source!r} is not a condition")
            fields = [pa.field(name, expr.evaluate_array(empty).type) for name, expr in self.projection]
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise JobDefinitionError(f"expressions do not type-check against the columns: {exc}") from exc
        object.__setattr__(self, "output_schema", pa.schema(fields))
        identity = {
            "scan_format": SCAN_FORMAT,
            "input": [f"{f.name}:{f.type}" for f in self.input_schema],
            "filter": self.filter.source if self.filter else None,
            "select": [[name, expr.source] for name, expr in self.projection],
        }
        if self.language != "python":  # the same text may mean another thing in another language
            identity["language"] = self.language
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        object.__setattr__(self, "fingerprint", digest[:16])

    @property
    def columns(self) -> frozenset[str]:
        """The input columns this plan reads; the rest need not be parsed (nor, in Parquet, fetched)."""
        expressions = [expr for _, expr in self.projection] + ([self.filter] if self.filter else [])
        return frozenset().union(*(expr.columns for expr in expressions))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.projection]

    def apply(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """The output rows of one batch: filter, then project."""
        if self.filter is not None:
            batch = batch.filter(self.filter.evaluate_array(batch))
        if batch.num_rows == 0:
            return self.output_schema.empty_table()
        return pa.Table.from_arrays([expr.evaluate_array(batch) for _, expr in self.projection],
                                    schema=self.output_schema)


def encode_rows(table: pa.Table, fingerprint: str) -> bytes:
    sink = io.BytesIO()
    schema = table.schema.with_metadata({_FINGERPRINT: fingerprint})
    pq.write_table(table.replace_schema_metadata(schema.metadata), sink, compression="zstd",
                   row_group_size=128 * 1024)
    return sink.getvalue()


def decode_rows(data: bytes, fingerprint: str) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise PartialMismatch(f"not a scan output file: {exc}") from exc
    found = (table.schema.metadata or {}).get(_FINGERPRINT, b"").decode()
    if found != fingerprint:
        raise PartialMismatch(f"output was written for job fingerprint {found!r}, this job is {fingerprint}")
    return table.replace_schema_metadata(None)
