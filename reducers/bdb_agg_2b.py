"""Big Data Benchmark query 2b: SUM(adRevenue) grouped by the first 10 characters of sourceIP."""
from reducers._bdb import aggregation_query

# Millions of groups on the full dataset: merged as up to 4 shards.
JOB = aggregation_query("bdb-agg-2b", 10, shards=4)
