"""Big Data Benchmark query 1b: SELECT pageURL, pageRank FROM rankings WHERE pageRank > 100."""
from reducers._bdb import scan_query

JOB = scan_query("bdb-scan-1b", 100)
