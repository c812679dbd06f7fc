"""Ad revenue per country in tumbling one-day windows of visitDate (exact decimal sums)."""
from chalicelib.jobs import Job
from reducers._bdb import USERVISITS

JOB = Job(
    name="revenue-by-day",
    description="SUM(adRevenue) per country and day of visitDate",
    prefix="uservisits/",
    format=USERVISITS,
    window={"column": "visitDate", "size": "1d"},
    keys={"countryCode": "countryCode"},
    aggregates={"revenue": "sum(adRevenue)"},
)
