"""An independent computation of the benchmark's queries with DuckDB, to check Tally's results against."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Iterable

USERVISITS_COLUMNS = {
    "sourceIP": "VARCHAR", "destURL": "VARCHAR", "visitDate": "DATE", "adRevenue": "DECIMAL(18,6)",
    "userAgent": "VARCHAR", "countryCode": "VARCHAR", "languageCode": "VARCHAR", "searchWord": "VARCHAR",
    "duration": "BIGINT",
}


def bdb_aggregation(paths: Iterable[Path], prefix_length: int) -> dict[str, Decimal]:
    """SELECT SUBSTR(sourceIP, 1, X), SUM(adRevenue) FROM uservisits GROUP BY 1, over exactly these files."""
    import duckdb

    files = [str(p) for p in paths]
    if not files:
        return {}
    connection = duckdb.connect()
    relation = connection.read_csv(files, header=False, columns=USERVISITS_COLUMNS, delimiter=",", quotechar="")
    connection.register("uservisits", relation)
    rows = connection.execute(
        f"SELECT SUBSTR(sourceIP, 1, {int(prefix_length)}), SUM(adRevenue) FROM uservisits GROUP BY 1"
    ).fetchall()
    return {key: value for key, value in rows}

RANKINGS_COLUMNS = {"pageURL": "VARCHAR", "pageRank": "BIGINT", "avgDuration": "BIGINT"}


def bdb_scan(paths: Iterable[Path], threshold: int) -> list[tuple[str, int]]:
    """SELECT pageURL, pageRank FROM rankings WHERE pageRank > X over exactly these files (CSV without header,
    or Parquet), sorted: a scan's output is a multiset of rows, compared in one order."""
    import duckdb

    files = [str(p) for p in paths]
    if not files:
        return []
    connection = duckdb.connect()
    if all(f.endswith(".parquet") for f in files):
        relation = connection.read_parquet(files)
    else:
        relation = connection.read_csv(files, header=False, columns=RANKINGS_COLUMNS, delimiter=",", quotechar="")
    connection.register("rankings", relation)
    return connection.execute(
        f"SELECT pageURL, pageRank FROM rankings WHERE pageRank > {int(threshold)} ORDER BY pageURL, pageRank"
    ).fetchall()


def revenue_by_day(paths: Iterable[Path]) -> dict[tuple[str, str], Decimal]:
    """SELECT date_trunc('day', visitDate), countryCode, SUM(adRevenue) FROM uservisits GROUP BY 1, 2, keyed
    by (ISO day, country) as the API serves them."""
    return {(day.isoformat(), country): revenue for day, country, revenue in _query(
        paths, "SELECT CAST(date_trunc('day', visitDate) AS DATE), countryCode, SUM(adRevenue) "
               "FROM uservisits GROUP BY 1, 2")}


def _query(paths: Iterable[Path], sql: str) -> list[tuple]:
    import duckdb

    files = [str(p) for p in paths]
    if not files:
        return []
    connection = duckdb.connect()
    relation = connection.read_csv(files, header=False, columns=USERVISITS_COLUMNS, delimiter=",", quotechar="")
    connection.register("uservisits", relation)
    return connection.execute(sql).fetchall()


def differences(expected: dict, actual: dict, limit: int = 20) -> list[str]:
    """Human-readable differences between two {group: value} maps; empty when they are equal."""
    problems = []
    for key in sorted(set(expected) | set(actual), key=str):
        if key not in actual:
            problems.append(f"missing group {key!r} (expected {expected[key]})")
        elif key not in expected:
            problems.append(f"unexpected group {key!r} = {actual[key]}")
        elif expected[key] != actual[key]:
            problems.append(f"group {key!r}: expected {expected[key]}, got {actual[key]}")
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems
