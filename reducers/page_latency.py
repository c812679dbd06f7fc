"""Web request logs as JSON lines: traffic and latency per page, errors excluded."""
JOB = {
    "name": "page-latency",
    "description": "Requests, mean and worst latency per page and method, over successful requests",
    "sql": """
        SELECT path, upper(method) AS method,
               count(*) AS requests, avg(latency_ms) AS mean_latency_ms, max(latency_ms) AS max_latency_ms,
               sum(bytes) AS bytes
        FROM requests
        WHERE status < 500
        GROUP BY path, upper(method)
    """,
}
