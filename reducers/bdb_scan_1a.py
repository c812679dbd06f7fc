"""Big Data Benchmark query 1a: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 1000."""
from reducers._bdb import scan_query

JOB = scan_query("bdb-scan-1a", 1000)
