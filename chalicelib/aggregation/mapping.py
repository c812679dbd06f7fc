"""User map functions: Python over a whole batch, for logic the expression language cannot state.

The function takes a pyarrow Table of the job's input columns and returns a table of new columns (a pyarrow
Table or RecordBatch, or anything with `to_arrow()`, such as a Polars DataFrame: `polars.from_arrow(batch)`
gets one). It may drop rows or make several rows of one. The job declares the output columns and their types
(`map_columns`); its keys, filter and aggregates are then expressions over those columns. It runs once per
batch of about 2 MB, so it costs what its Python costs: a slower path than expressions, which stay in Arrow.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from ..errors import MapFunctionFailed
from .udaf import code_identity


@dataclass(frozen=True)
class MapFunction:
    function: Callable[[pa.Table], Any]
    output_schema: pa.Schema
    reads: tuple[str, ...]  # the input columns it is given: a function reading others fails the same way always

    @property
    def identity(self) -> str:
        # The code is part of the fingerprint: partials of an edited function must not merge with the new.
        return hashlib.sha256(code_identity(self.function)).hexdigest()[:16]

    def apply(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = (batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])).select(list(self.reads))
        result = self.function(table)
        if hasattr(result, "to_arrow") and not isinstance(result, (pa.Table, pa.RecordBatch)):
            result = result.to_arrow()
        if isinstance(result, pa.RecordBatch):
            result = pa.Table.from_batches([result])
        if not isinstance(result, pa.Table):
            raise MapFunctionFailed(f"map function returned {type(result).__name__}, not a table")
        missing = [name for name in self.output_schema.names if name not in result.column_names]
        if missing:
            raise MapFunctionFailed(f"map function output lacks the declared columns {missing}")
        try:
            return result.select(self.output_schema.names).cast(self.output_schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise MapFunctionFailed(f"map function output does not fit the declared types: {exc}") from exc
