"""Big Data Benchmark query 1a: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 1000 (map-only: output
rows per input object)."""
JOB = {
    "name": "bdb-scan-1a",
    "description": "Big Data Benchmark scan: pageURL, pageRank of rankings WHERE pageRank > 1000",
    "sql": "SELECT pageURL, pageRank FROM rankings WHERE pageRank > 1000",
}
