"""Big Data Benchmark query 1b: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 100 (map-only: output
rows per input object)."""
JOB = {
    "name": "bdb-scan-1b",
    "description": "Big Data Benchmark scan: pageURL, pageRank of rankings WHERE pageRank > 100",
    "sql": "SELECT pageURL, pageRank FROM rankings WHERE pageRank > 100",
}
