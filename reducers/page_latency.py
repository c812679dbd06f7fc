"""Web request logs as JSON lines: traffic and latency per page, errors excluded."""
from chalicelib.jobs import Job, JsonLinesFormat

JOB = Job(
    name="page-latency",
    description="Requests, mean and worst latency per page and method, over successful requests",
    prefix="requests/",
    suffix=".jsonl",
    format=JsonLinesFormat(
        columns={"ts": "timestamp", "method": "string", "path": "string", "status": "int64",
                 "latency_ms": "float64", "bytes": "int64"},
    ),
    filter="status < 500",
    keys={"path": "path", "method": "upper(method)"},
    aggregates={
        "requests": "count()",
        "mean_latency_ms": "mean(latency_ms)",
        "max_latency_ms": "max(latency_ms)",
        "bytes": "sum(bytes)",
    },
)
