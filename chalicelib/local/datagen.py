"""Big Data Benchmark-shaped `uservisits` and `rankings` files, deterministic for a given seed.

Columns and value shapes follow the benchmark's generator (uservisits: sourceIP, destURL, visitDate,
adRevenue, userAgent, countryCode, languageCode, searchWord, duration; CSV, no header, about 160-175 bytes a
row; rankings: pageURL, pageRank, avgDuration). Built with numpy and Arrow so a few hundred MB take seconds,
not minutes.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

BYTES_PER_ROW = 180
_AGENTS = [
    "Mozilla/5.0 (Windows; U; Windows NT 5.1; en-US) AppleWebKit/525.13 (KHTML; like Gecko) Safari/525.13",
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0; SLCC1; .NET CLR 2.0.50727)",
    "Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9.0.1) Gecko/2008072820 Firefox/3.0.1",
    "Opera/9.60 (Windows NT 5.1; U; en) Presto/2.1.1",
    "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_5_4; en-us) AppleWebKit/525.18 (KHTML; like Gecko)",
    "Mozilla/5.0 (iPhone; U; CPU like Mac OS X) AppleWebKit/420+ (KHTML; like Gecko) Version/3.0 Mobile/1A543a",
    "Googlebot/2.1 (+http://www.googlebot.com/bot.html)",
    "msnbot/1.1 (+http://search.msn.com/msnbot.htm)",
]
_COUNTRIES = ["USA", "CHN", "IND", "BRA", "DEU", "FRA", "GBR", "JPN", "RUS", "MEX", "IDN", "NGA", "CAN",
              "ITA", "ESP", "KOR", "AUS", "ARG", "POL", "NLD", "TUR", "EGY", "ZAF", "SWE", "BEL", "CHE"]
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _words(rng: np.random.Generator, count: int, low: int, high: int) -> pa.Array:
    lengths = rng.integers(low, high, size=count)
    letters = _LETTERS[rng.integers(0, 26, size=int(lengths.sum()))]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(letters.tobytes()))


def uservisits_table(rows: int, rng: np.random.Generator) -> pa.Table:
    octets = [pc.cast(pa.array(rng.integers(low, 256, size=rows)), pa.string()) for low in (1, 0, 0, 0)]
    source_ip = pc.binary_join_element_wise(*octets, ".")
    url_pool = _words(rng, 20_000, 8, 56)
    word_pool = _words(rng, 5_000, 4, 14)
    epoch = dt.date(1970, 1, 1)
    days = rng.integers((dt.date(1980, 1, 1) - epoch).days, (dt.date(2010, 1, 1) - epoch).days, size=rows)
    micros = rng.integers(1, 1_000_000_000, size=rows)  # adRevenue in millionths: up to 999.999999
    whole = pc.cast(pa.array(micros // 1_000_000), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(micros % 1_000_000), pa.string()), width=6, padding="0")
    revenue = pc.binary_join_element_wise(whole, fraction, ".")
    country = rng.integers(0, len(_COUNTRIES), size=rows)
    countries = pa.array(_COUNTRIES).take(pa.array(country))
    return pa.table({
        "sourceIP": source_ip,
        "destURL": pc.binary_join_element_wise("http://", url_pool.take(pa.array(rng.integers(0, 20_000, rows))), ""),
        "visitDate": pa.array(days.astype("int32"), pa.int32()).cast(pa.date32()),
        "adRevenue": revenue,
        "userAgent": pa.array(_AGENTS).take(pa.array(rng.integers(0, len(_AGENTS), rows))),
        "countryCode": countries,
        "languageCode": pc.binary_join_element_wise(countries, pa.scalar("EN"), "-"),
        "searchWord": word_pool.take(pa.array(rng.integers(0, 5_000, rows))),
        "duration": pa.array(rng.integers(1, 100, size=rows)),
    })


def write_uservisits(directory: Path, total_bytes: int, file_bytes: int = 8 << 20, seed: int = 42) -> list[Path]:
    """Files `part-NNNNN.csv` of about `file_bytes` each, `total_bytes` in all. Same seed, same bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = max(1, round(total_bytes / file_bytes))
    rows_per_file = max(1, file_bytes // BYTES_PER_ROW)
    paths = []
    for index in range(files):
        path = directory / f"part-{index:05d}.csv"
        table = uservisits_table(rows_per_file, rng)
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        paths.append(path)
    return paths


RANKINGS_BYTES_PER_ROW = 56
# pageRank: a Pareto tail, P(pageRank > x) ~ (x / 16.4) ** -1.93 above 26, plus a sliver of ranks 1-10, so
# the scan queries select very different fractions, as in the benchmark (its published result sizes for
# 1a/1b/1c are about 0.04% / 3.7% / 99.97% of rankings): here WHERE pageRank > 1000 keeps ~0.04% of the
# rows, > 100 ~3.7%, > 10 ~99.97%.
_RANK_TAIL, _RANK_SCALE, _LOW_RANKS = 1.93, 16.4, 0.0003


def rankings_table(rows: int, rng: np.random.Generator) -> pa.Table:
    tail = 10 + np.floor(_RANK_SCALE * (1.0 - rng.random(rows)) ** (-1.0 / _RANK_TAIL))
    low = rng.random(rows) < _LOW_RANKS
    rank = np.where(low, rng.integers(1, 11, size=rows), np.minimum(tail, 10_000_000)).astype(np.int64)
    return pa.table({
        "pageURL": _words(rng, rows, 10, 90),
        "pageRank": pa.array(rank),
        "avgDuration": pa.array(rng.integers(1, 101, size=rows)),
    })


def write_rankings(directory: Path, total_bytes: int, file_bytes: int = 8 << 20, seed: int = 42,
                   parquet: bool = False) -> list[Path]:
    """Files `part-NNNNN.csv` (CSV without header, as the benchmark ships them) or `.parquet` (the same rows)
    of about `file_bytes` of CSV each, `total_bytes` in all. Same seed, same rows."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = max(1, round(total_bytes / file_bytes))
    rows_per_file = max(1, file_bytes // RANKINGS_BYTES_PER_ROW)
    paths = []
    for index in range(files):
        table = rankings_table(rows_per_file, rng)
        if parquet:
            path = directory / f"part-{index:05d}.parquet"
            pq.write_table(table, path, compression="zstd", row_group_size=128 * 1024)
        else:
            path = directory / f"part-{index:05d}.csv"
            pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        paths.append(path)
    return paths
