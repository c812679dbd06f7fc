"""Big Data Benchmark query 2b: SUM(adRevenue) grouped by the first 10 characters of sourceIP."""
JOB = {
    "name": "bdb-agg-2b",
    "description": "Big Data Benchmark aggregation: SUM(adRevenue) by SUBSTR(sourceIP, 1, 10)",
    "sql": """
        SELECT substr(sourceIP, 1, 10) AS sourceIP_prefix, sum(adRevenue) AS adRevenue
        FROM uservisits
        GROUP BY sourceIP_prefix
    """,
    "shards": 4,  # millions of groups on the full dataset: merged as up to 4 shards
}
