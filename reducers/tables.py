"""The tables jobs read, by name: SQL jobs say `FROM uservisits`; Python jobs take a table's prefix and format."""
from chalicelib.tables import CsvFormat, JsonLinesFormat, Table

TABLES = {
    # The Big Data Benchmark's tables (CSV, no header). adRevenue is money: decimal, summed exactly.
    "uservisits": Table(
        prefix="uservisits/",
        format=CsvFormat(columns={
            "sourceIP": "string",
            "destURL": "string",
            "visitDate": "date",
            "adRevenue": "decimal(18,6)",
            "userAgent": "string",
            "countryCode": "string",
            "languageCode": "string",
            "searchWord": "string",
            "duration": "int64",
        }),
        description="Big Data Benchmark: one row per visit",
    ),
    "rankings": Table(
        prefix="rankings/",
        format=CsvFormat(columns={"pageURL": "string", "pageRank": "int64", "avgDuration": "int64"}),
        description="Big Data Benchmark: one row per page",
    ),
    # Web request logs as JSON lines.
    "requests": Table(
        prefix="requests/",
        suffix=".jsonl",
        format=JsonLinesFormat(columns={"ts": "timestamp", "method": "string", "path": "string", "status": "int64",
                                        "latency_ms": "float64", "bytes": "int64"}),
        description="web requests, one JSON object per line",
    ),
}
