"""Big Data Benchmark query 2a: SUM(adRevenue) grouped by the first 8 characters of sourceIP."""
from reducers._bdb import aggregation_query

JOB = aggregation_query("bdb-agg-2a", 8)
