"""Big Data Benchmark query 1c: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 10 (map-only: output
rows per input object)."""
JOB = {
    "name": "bdb-scan-1c",
    "description": "Big Data Benchmark scan: pageURL, pageRank of rankings WHERE pageRank > 10",
    "sql": "SELECT pageURL, pageRank FROM rankings WHERE pageRank > 10",
}
