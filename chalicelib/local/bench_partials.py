"""What a partial costs on the wire: one high-cardinality partial (2c's of one object) written in Tally's codec
and in the formats it could have used instead, with its size and encode / decode times. Every format is read
back and compared with the partial, so a format that loses a digit or a group cannot win on speed."""
from __future__ import annotations

import gc
import io
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ..aggregation.codec import decode, encode
from ..engine.mapper import PARTIAL_COMPRESSION


@dataclass(frozen=True)
class PartialFormat:
    name: str
    bytes: int
    encode_seconds: float  # best of the runs, one core
    decode_seconds: float
    groups: int


def _ipc(compression: str | None) -> tuple[Callable[[pa.Table], bytes], Callable[[bytes], pa.Table]]:
    options = pa.ipc.IpcWriteOptions(compression=compression)

    def write(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    return write, lambda data: pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _json_lines(table: pa.Table) -> bytes:
    return "\n".join(json.dumps(row, default=str) for row in table.to_pylist()).encode()


def _from_json_lines(schema: pa.Schema) -> Callable[[bytes], pa.Table]:
    decimals = [f.name for f in schema if pa.types.is_decimal(f.type)]

    def read(data: bytes) -> pa.Table:
        rows = [json.loads(line) for line in data.split(b"\n")]
        for row in rows:
            for name in decimals:
                row[name] = Decimal(row[name])
        return pa.Table.from_pylist(rows, schema)

    return read


def _best(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        gc.collect()
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def partial_formats(partial: pa.Table, fingerprint: str, repeat: int = 3) -> list[PartialFormat]:
    """`partial` written and read back in each format, Tally's codec (Arrow IPC, runs run-end encoded, with
    its metadata; lz4 as the mapper writes it, then zstd as the reducer keeps results) first. Raises if a
    format does not give the partial back."""
    formats = {
        "Arrow IPC, lz4 (Tally's codec, a mapper's partial)": (
            lambda t: encode(t, fingerprint, compression=PARTIAL_COMPRESSION), lambda b: decode(b, fingerprint)[0]),
        "Arrow IPC, zstd (Tally's codec, kept results)": (
            lambda t: encode(t, fingerprint), lambda b: decode(b, fingerprint)[0]),
        "Arrow IPC, uncompressed": _ipc(None),
        "Parquet, zstd": (_parquet, lambda b: pq.read_table(io.BytesIO(b))),
        "JSON lines (json module)": (_json_lines, _from_json_lines(partial.schema)),
    }
    measured = []
    for name, (write, read) in formats.items():
        runs = 1 if name.startswith("JSON") else repeat  # seconds a run: once tells enough
        encode_seconds, data = _best(runs, lambda: write(partial))
        decode_seconds, table = _best(runs, lambda: read(data))
        if not table.equals(partial):
            raise AssertionError(f"{name} did not give the partial back")
        measured.append(PartialFormat(name, len(data), encode_seconds, decode_seconds, partial.num_rows))
    return measured
