"""Ad revenue per country in tumbling one-day windows of visitDate (exact decimal sums). time_bucket of a date
is a date, so windows are served as days; the window key is what the API's window_from/window_to filter."""
JOB = {
    "name": "revenue-by-day",
    "description": "SUM(adRevenue) per country and day of visitDate",
    "sql": """
        SELECT time_bucket(INTERVAL '1 day', visitDate) AS window_start, countryCode,
               sum(adRevenue) AS revenue
        FROM uservisits
        GROUP BY window_start, countryCode
    """,
}
