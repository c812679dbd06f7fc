"""The Big Data Benchmark's tables (CSV, no header): `uservisits` (adRevenue is money: decimal, summed exactly)
and `rankings`."""
from chalicelib.jobs import CsvFormat

USERVISITS = CsvFormat(
    columns={
        "sourceIP": "string",
        "destURL": "string",
        "visitDate": "date",
        "adRevenue": "decimal(18,6)",
        "userAgent": "string",
        "countryCode": "string",
        "languageCode": "string",
        "searchWord": "string",
        "duration": "int64",
    },
    header=False,
)

RANKINGS = CsvFormat(columns={"pageURL": "string", "pageRank": "int64", "avgDuration": "int64"}, header=False)


def scan_query(name: str, threshold: int):
    """SELECT pageURL, pageRank FROM rankings WHERE pageRank > X: a map-only job, output rows per object."""
    from chalicelib.jobs import Job

    return Job(
        name=name,
        description=f"Big Data Benchmark scan: pageURL, pageRank of rankings WHERE pageRank > {threshold}",
        prefix="rankings/",
        format=RANKINGS,
        filter=f"pageRank > {threshold}",
        select={"pageURL": "pageURL", "pageRank": "pageRank"},
    )


def aggregation_query(name: str, prefix_length: int, shards: int = 1):
    """SELECT SUBSTR(sourceIP, 1, X), SUM(adRevenue) FROM uservisits GROUP BY SUBSTR(sourceIP, 1, X)"""
    from chalicelib.jobs import Job

    return Job(
        name=name,
        description=f"Big Data Benchmark aggregation: SUM(adRevenue) by SUBSTR(sourceIP, 1, {prefix_length})",
        prefix="uservisits/",
        format=USERVISITS,
        keys={"sourceIP_prefix": f"substr(sourceIP, 1, {prefix_length})"},
        aggregates={"adRevenue": "sum(adRevenue)"},
        shards=shards,
    )
