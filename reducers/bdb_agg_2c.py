"""Big Data Benchmark query 2c: SUM(adRevenue) grouped by the first 12 characters of sourceIP."""
from reducers._bdb import aggregation_query

JOB = aggregation_query("bdb-agg-2c", 12)
