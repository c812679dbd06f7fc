"""The benchmark's inputs: Big Data Benchmark-shaped tables in every input format the bench knows, cached on disk.

Every format of a table holds the same rows: the CSV is generated (datagen, deterministic seed) and the other
formats are converted from it. Throughput is counted in bytes of that CSV (see `Dataset.csv_bytes`), so figures
compare across formats; each format's own object size is reported next to it.
"""
from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from . import datagen
from .referee import USERVISITS_COLUMNS

FORMATS = ("csv", "csv.gz", "jsonl", "parquet")
RANKINGS_COLUMNS = {"pageURL": "VARCHAR", "pageRank": "BIGINT", "avgDuration": "BIGINT"}


@dataclass(frozen=True)
class Dataset:
    table: str  # uservisits | rankings
    directory: Path
    parts: tuple[Path, ...]  # the CSV in files of `file_mb`, for uploading
    csv: Path  # the same rows in one CSV file

    @property
    def csv_bytes(self) -> int:
        return self.csv.stat().st_size

    def path(self, fmt: str) -> Path:
        """This table in `fmt` (csv, csv.gz, jsonl, parquet), converted from the CSV on first use."""
        target = self.directory / f"all.{fmt}"
        if fmt == "csv" or target.exists():
            return target if fmt != "csv" else self.csv
        partial = target.with_name(target.name + ".tmp")
        if fmt == "csv.gz":
            with open(self.csv, "rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        elif fmt == "jsonl":
            _csv_to_jsonl(self, partial)
        elif fmt == "parquet":
            pq.write_table(self.arrow(), partial, compression="snappy")
        else:
            raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")
        partial.rename(target)
        return target

    def arrow(self) -> pa.Table:
        columns = USERVISITS_COLUMNS if self.table == "uservisits" else RANKINGS_COLUMNS
        types = {name: _ARROW_TYPES[t] for name, t in columns.items()}
        return pa_csv.read_csv(self.csv, pa_csv.ReadOptions(column_names=list(columns)),
                               convert_options=pa_csv.ConvertOptions(column_types=types))


_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DATE": pa.date32(),
                "DECIMAL(18,6)": pa.decimal128(18, 6)}


def _csv_to_jsonl(dataset: Dataset, target: Path) -> None:
    import duckdb

    columns = USERVISITS_COLUMNS if dataset.table == "uservisits" else RANKINGS_COLUMNS
    connection = duckdb.connect()
    relation = connection.read_csv(str(dataset.csv), header=False, columns=columns, delimiter=",", quotechar="")
    connection.register("source", relation)
    connection.execute(f"COPY source TO '{target}' (FORMAT JSON)")


def uservisits(cache: Path, size_mb: int, seed: int = 42, file_mb: int = 8) -> Dataset:
    directory = cache / f"uservisits-{size_mb}mb-{file_mb}mb-seed{seed}"

    def generate(parts_dir: Path) -> list[Path]:
        return datagen.write_uservisits(parts_dir, size_mb << 20, min(file_mb, size_mb) << 20, seed)

    return _cached("uservisits", directory, generate)


def rankings(cache: Path, size_mb: int, seed: int = 42, file_mb: int = 8) -> Dataset:
    """datagen's rankings when it has them; otherwise a small stand-in of the same shape (pageURL, pageRank,
    avgDuration) whose pageRank spreads over 6..1,600, so 1a/1b/1c keep about 9% / 52% / 91% of the rows."""
    directory = cache / f"rankings-{size_mb}mb-{file_mb}mb-seed{seed}"
    writer = getattr(datagen, "write_rankings", None)

    def generate(parts_dir: Path) -> list[Path]:
        if writer is not None:
            return writer(parts_dir, size_mb << 20, min(file_mb, size_mb) << 20, seed)
        return _write_rankings(parts_dir, size_mb << 20, min(file_mb, size_mb) << 20, seed)

    return _cached("rankings", directory, generate)


def _cached(table: str, directory: Path, generate) -> Dataset:
    stamp = directory / "COMPLETE"
    if not stamp.exists():
        shutil.rmtree(directory, ignore_errors=True)
        parts = generate(directory / "parts")
        with open(directory / "all.csv", "wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
        stamp.write_text(json.dumps({"parts": [p.name for p in parts]}))
    names = json.loads(stamp.read_text())["parts"]
    return Dataset(table, directory, tuple(directory / "parts" / n for n in names), directory / "all.csv")


def _write_rankings(directory: Path, total_bytes: int, file_bytes: int, seed: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = max(1, file_bytes // 60)
    paths = []
    for index in range(max(1, round(total_bytes / file_bytes))):
        words = datagen._words(rng, rows, 10, 70)
        table = pa.table({
            "pageURL": pc.binary_join_element_wise("http://", words, ".html", ""),
            "pageRank": pa.array((10 ** rng.uniform(0.8, 3.2, rows)).astype(np.int64)),
            "avgDuration": pa.array(rng.integers(1, 100, rows)),
        })
        path = directory / f"part-{index:05d}.csv"
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        paths.append(path)
    return paths
