"""Big Data Benchmark query 1c: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 10."""
from reducers._bdb import scan_query

JOB = scan_query("bdb-scan-1c", 10)
