"""Per country: approximate distinct visitors (HLL), p95 visit duration (KLL), the sample standard deviation of
ad revenue (exact moments) and the 5 most searched words with their counts (frequent-items sketch)."""
JOB = {
    "name": "visits-by-country",
    "description": "Distinct visitors, p95 duration, revenue stddev and top search words per country",
    # count(DISTINCT) is the HLL sketch (README: within 4.9 % of the exact count, 99.7 % of the time).
    # top_k's counts are within ±0.46 % of a country's rows (lg_max_k 10). The generated BDB data draws words
    # nearly uniformly from ~160,000, so its top 5 is noise within that bound; on skewed data it is the real top 5.
    "sql": """
        SELECT countryCode,
               count(DISTINCT sourceIP) AS visitors,
               percentile_disc(0.95) WITHIN GROUP (ORDER BY duration) AS p95_duration,
               stddev_samp(adRevenue) AS revenue_stddev,
               top_k(searchWord, 5) AS top_words
        FROM uservisits
        GROUP BY countryCode
    """,
}
