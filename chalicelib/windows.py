"""Event-time tumbling windows: a job's rows bucketed by a date or timestamp column.

`window=Window(column="visitDate", size="1d")` adds a first group key `window_start`, the start of the row's
window, so results are per (window, key). Windows are aligned on the Unix epoch (1970-01-01T00:00, weeks on
Mondays), like `date_trunc` for a size of one unit and DuckDB's `time_bucket(..., origin => epoch)` for more.
Late rows need nothing special: a row lands in its window's group whenever its object is mapped.
"""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import JobDefinitionError
from .expressions import Expression

WINDOW_KEY = "window_start"
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_SIZE = re.compile(r"^(\d+)(s|m|h|d|w|mo|y)$")
_SUB_DAY = {"second", "minute", "hour"}


class Window(BaseModel):
    """A tumbling window: `size` is a count and a unit, s m h d w mo y (e.g. "15m", "1h", "1d", "1mo")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(min_length=1, description="a date or timestamp column")
    size: str = Field(description="e.g. 15m, 1h, 1d, 1w, 1mo")

    @field_validator("size")
    @classmethod
    def _size_is_known(cls, size: str) -> str:
        match = _SIZE.match(size.strip())
        if not match or int(match[1]) < 1:
            raise ValueError(f"window size {size!r} is not a positive count and a unit ({', '.join(_UNITS)}), "
                             "e.g. 1h or 1d")
        return size.strip()

    @property
    def unit(self) -> str:
        return _UNITS[_SIZE.match(self.size)[2]]

    @property
    def multiple(self) -> int:
        return int(_SIZE.match(self.size)[1])

    def expression(self, schema: pa.Schema) -> Expression:
        """The window-start key: the column floored to the window, as a compiled expression."""
        if self.column not in schema.names:
            raise JobDefinitionError(f"window column {self.column!r} is not a column ({', '.join(schema.names)})")
        kind = schema.field(self.column).type
        if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
            raise JobDefinitionError(f"window column {self.column!r} is {kind}, not a date or timestamp")
        if pa.types.is_date(kind) and self.unit in _SUB_DAY:
            raise JobDefinitionError(f"window column {self.column!r} holds dates: windows of {self.size} need "
                                     "a timestamp column")
        column, unit, multiple = self.column, self.unit, self.multiple
        return Expression(f"window({column}, {self.size!r})", frozenset({column}),
                          lambda batch: pc.floor_temporal(batch.column(column), multiple=multiple, unit=unit))
