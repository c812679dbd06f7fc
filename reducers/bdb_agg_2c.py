"""Big Data Benchmark query 2c: SUM(adRevenue) grouped by the first 12 characters of sourceIP."""
from reducers._bdb import aggregation_query

# About one group per input row (254 M on the full dataset, FIELD-NOTES 2c): merged as up to 16 shards.
JOB = aggregation_query("bdb-agg-2c", 12, shards=16)
