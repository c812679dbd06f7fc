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
    except pa.ArrowInvalid as exc:
        raise PartialMismatch(f"not an encoded partial: {exc}") from exc
    metadata = table.schema.metadata or {}
    if metadata.get(MAGIC) != CODEC_VERSION.encode():
        raise PartialMismatch(f"partial codec version {metadata.get(MAGIC)!r}, expected {CODEC_VERSION}")
    found = metadata.get(b"tally.fingerprint", b"").decode()
    if found != fingerprint:
        raise PartialMismatch(f"partial was written for job fingerprint {found}, this job is {fingerprint}")
    meta = json.loads(metadata.get(b"tally.meta", b"{}"))
    return table.replace_schema_metadata(None), meta
