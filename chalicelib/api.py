"""HTTP responses as data: JSON bodies with exact decimals, and the mapping from Tally's errors to status codes.
Kept apart from app.py so the handlers stay one call each; imports nothing from chalice."""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any

import simplejson

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GroupNotFound, InvalidQuery, JobNotFound, TallyError

_STATUS = {JobNotFound: 404, GroupNotFound: 404, InvalidQuery: 400}


def to_json(body: Any) -> str:
    # simplejson writes Decimal as a JSON number with every digit: exact sums stay exact on the wire.
    return simplejson.dumps(body, use_decimal=True, default=_default, ignore_nan=True)


def _default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ViewRequest(BaseModel):
    """POST /jobs: a view's name and its one SQL statement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=63)  # the job model checks the rest
    sql: str = Field(min_length=1, max_length=20_000)

    @classmethod
    def from_body(cls, body: bytes | None) -> "ViewRequest":
        try:
            return cls.model_validate_json(body or b"")
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            raise InvalidQuery(f'the body must be JSON {{"name": "...", "sql": "..."}}: {problems}') from None


def error_body(error: TallyError) -> tuple[int, dict[str, str]]:
    for kind, status in _STATUS.items():
        if isinstance(error, kind):
            return status, {"error": type(error).__name__, "message": str(error)}
    return 500, {"error": type(error).__name__, "message": str(error)}


@lru_cache(maxsize=1)
def dashboard_html() -> str:
    """The dashboard: one static file (HTML, CSS and vanilla JS), shipped in the Lambda package."""
    return (Path(__file__).parent / "dashboard.html").read_text(encoding="utf-8")
