"""Per country: approximate distinct visitors (HLL), p95 visit duration (KLL), the sample standard deviation of
ad revenue (exact moments) and the 5 most searched words with their counts (frequent-items sketch)."""
from chalicelib.jobs import Job
from reducers._bdb import USERVISITS

JOB = Job(
    name="visits-by-country",
    description="Distinct visitors, p95 duration, revenue stddev and top search words per country",
    prefix="uservisits/",
    format=USERVISITS,
    keys={"countryCode": "countryCode"},
    aggregates={
        "visitors": "approx_distinct(sourceIP)",
        "p95_duration": "approx_quantile(duration, 0.95)",
        "revenue_stddev": "stddev_samp(adRevenue)",
        # Counts within ±0.46 % of a country's rows (lg_max_k 10). The generated BDB data draws words nearly
        # uniformly from ~160,000, so its top 5 is noise within that bound; on skewed data it is the real top 5.
        "top_words": "top_k(searchWord, 5)",
    },
)
