"""Big Data Benchmark query 2a: SUM(adRevenue) grouped by the first 8 characters of sourceIP."""
JOB = {
    "name": "bdb-agg-2a",
    "description": "Big Data Benchmark aggregation: SUM(adRevenue) by SUBSTR(sourceIP, 1, 8)",
    "sql": """
        SELECT substr(sourceIP, 1, 8) AS sourceIP_prefix, sum(adRevenue) AS adRevenue
        FROM uservisits
        GROUP BY sourceIP_prefix
    """,
}
