"""Partials on the wire: Arrow IPC with zstd, tagged with the format version and the plan fingerprint so a
partial from another job definition is refused rather than merged into a wrong number."""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from ..errors import PartialMismatch

MAGIC = b"tally.partial"
CODEC_VERSION = "1"
_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def encode(table: pa.Table, fingerprint: str, meta: dict[str, Any] | None = None) -> bytes:
    schema = table.schema.with_metadata({
        MAGIC: CODEC_VERSION,
        b"tally.fingerprint": fingerprint,
        b"tally.meta": json.dumps(meta or {}, sort_keys=True),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=_OPTIONS) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


def decode(data: bytes, fingerprint: str) -> tuple[pa.Table, dict[str, Any]]:
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        metadata = table.schema.metadata or {}
        version = metadata.get(MAGIC)
        found = metadata.get(b"tally.fingerprint", b"").decode()
        meta = json.loads(metadata.get(b"tally.meta", b"{}"))
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:  # JSON and Unicode errors are ValueErrors
        raise PartialMismatch(f"not an encoded partial: {type(exc).__name__}: {exc}") from exc
    if version != CODEC_VERSION.encode():
        raise PartialMismatch(f"partial codec version {version!r}, expected {CODEC_VERSION}")
    if found != fingerprint:
        raise PartialMismatch(f"partial was written for job fingerprint {found}, this job is {fingerprint}")
    return table.replace_schema_metadata(None), meta
