"""Big Data Benchmark query 2c: SUM(adRevenue) grouped by the first 12 characters of sourceIP."""
JOB = {
    "name": "bdb-agg-2c",
    "description": "Big Data Benchmark aggregation: SUM(adRevenue) by SUBSTR(sourceIP, 1, 12)",
    "sql": """
        SELECT substr(sourceIP, 1, 12) AS sourceIP_prefix, sum(adRevenue) AS adRevenue
        FROM uservisits
        GROUP BY sourceIP_prefix
    """,
    # About one group per input row (254 M on the full dataset, FIELD-NOTES 2c): merged as up to 16 shards.
    "shards": 16,
}
