"""The HTTP API described as an OpenAPI 3.0 document, served at /openapi.json.

Written by hand (the descriptions are for people), kept equal to app.py's routes and to the parameters the
handlers accept by tests/test_openapi.py: a route, a method or a query parameter added without a line here
fails that test.
"""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JOB = {"name": "job", "in": "path", "required": True, "description": "job name, as in GET /jobs",
        "schema": {"type": "string"}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_FRESH = _query("fresh", "include partials mapped since the last reducer run (uncached: reads the inbox)",
                {"type": "string", "enum": ["true", "false", "1", "0"]})

PATHS: dict[str, dict[str, Any]] = {
    "/": {"get": {
        "operationId": "dashboard", "summary": "the dashboard: each job's status and top groups, refreshing live",
        "security": [],
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }},
    "/openapi.json": {"get": {
        "operationId": "openapi", "summary": "this document", "security": [],
        "responses": {"200": _json("OpenAPI 3.0 document", {"type": "object"})},
    }},
    "/jobs": {"get": {
        "operationId": "listJobs", "summary": "every job and its definition",
        "responses": {"200": _json("jobs", {"type": "object", "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}})},
    }, "post": {
        "operationId": "createView",
        "summary": "create a view: a job defined by one SQL statement, kept in the state bucket; mappers and "
                   "reducers pick it up within a minute, and the reconcile maps the objects already in its table",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name", "sql"], "additionalProperties": False, "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
                "sql": {"type": "string", "description": "SELECT ... FROM <table> [WHERE] [GROUP BY] [HAVING]"}}}}}},
        "responses": {"201": _json("the view's description", {"$ref": "#/components/schemas/Job"}),
                      "400": _ERROR},
    }},
    "/jobs/{job}": {"delete": {
        "operationId": "dropView",
        "summary": "drop a view created at run time (jobs defined in code cannot be dropped); its state is "
                   "deleted once the drop is older than the garbage grace",
        "parameters": [_JOB],
        "responses": {"200": _json("dropped", {"type": "object", "properties": {
            "job": {"type": "string"}, "dropped": {"type": "boolean"}, "version": {"type": "integer"},
            "at": {"type": "string"}, "state": {"type": "string"}}}), "400": _ERROR, "404": _ERROR},
    }},
    "/jobs/{job}/results": {"get": {
        "operationId": "jobResults",
        "summary": "a page of the job's current result: groups (aggregation jobs) or output rows (scan jobs)",
        "description": "A page of a large result reads only what it returns: by key (and prefix, and cursor), the "
                       "blocks of each shard's runs from the cursor on; by an aggregate, each shard's leaderboard of "
                       "its top 2,000 groups and the changes since. Deep pages by an aggregate (past a shard's "
                       "leaderboard), window_from/window_to and having filters that keep few groups, and fresh=true "
                       "read more, up to whole shards.",
        "parameters": [
            _JOB,
            _query("limit", "rows per page (default 100, capped at 1000)", {"type": "integer", "minimum": 1}),
            _query("order_by", "aggregation jobs: a key or aggregate name (default: the keys)", {"type": "string"}),
            _query("desc", "aggregation jobs: descending order",
                   {"type": "string", "enum": ["true", "false", "1", "0"]}),
            _query("prefix", "aggregation jobs: only groups whose first key (a string) starts with this",
                   {"type": "string"}),
            _query("cursor", "next_cursor of the previous page, with the same other parameters", {"type": "string"}),
            _query("window_from", "windowed jobs: only windows starting at or after this ISO date or timestamp",
                   {"type": "string"}),
            _query("window_to", "windowed jobs: only windows starting before this ISO date or timestamp",
                   {"type": "string"}),
            _FRESH,
            _query("view", "scan jobs: rows (default; in input key, file, row order) or files (the live output "
                           "files with their row counts)", {"type": "string", "enum": ["rows", "files"]}),
        ],
        "responses": {"200": _json("a page", {"oneOf": [{"$ref": "#/components/schemas/Page"},
                                                         {"$ref": "#/components/schemas/ScanPage"}]}),
                      "400": _ERROR, "404": _ERROR},
    }},
    "/jobs/{job}/results/{key}": {"get": {
        "operationId": "jobGroup", "summary": "one group",
        "parameters": [_JOB, {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
                              "description": "the group's key, URL-encoded; a JSON array for several keys"},
                       _FRESH],
        "responses": {"200": _json("the group", {"$ref": "#/components/schemas/Row"}), "400": _ERROR,
                      "404": _ERROR},
    }},
    "/jobs/{job}/export": {"get": {
        "operationId": "jobExport",
        "summary": "the job's current result as one file (written once per generation), at a presigned URL",
        "description": "The rows GET /jobs/{job}/results serves, in its default order (keys ascending; a scan "
                       "job's output rows in input order), key columns then values. Parquet keeps every type "
                       "(exact decimals, dates, lists and structs); CSV has a header row, writes nulls as empty "
                       "fields, decimals with every digit, dates and timestamps in ISO 8601, and nested values "
                       "(lists, structs) as JSON text. The URL needs no credentials and expires at expires_at.",
        "parameters": [_JOB, _query("format", "parquet (default) or csv",
                                    {"type": "string", "enum": ["parquet", "csv"]})],
        "responses": {"200": _json("where to download the export", {"$ref": "#/components/schemas/Export"}),
                      "400": _ERROR, "404": _ERROR},
    }},
    "/jobs/{job}/status": {"get": {
        "operationId": "jobStatus", "summary": "progress, lag and quarantined inputs",
        "parameters": [_JOB],
        "responses": {"200": _json("status", {"$ref": "#/components/schemas/Status"}), "404": _ERROR},
    }},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
    "Job": {"type": "object", "properties": {"name": {"type": "string"}, "prefix": {"type": "string"},
                                             "kind": {"type": "string", "enum": ["aggregation", "scan"]},
                                             "keys": {"type": "object", "nullable": True},
                                             "aggregates": {"type": "object", "nullable": True},
                                             "filter": {"type": "string", "nullable": True},
                                             "select": {"type": "object", "nullable": True},
                                             "columns": {"type": "object", "description": "each result "
                                                         "column's Arrow type, keys first"},
                                             "arrow_schema": {"type": "string", "description": "the same, as "
                                                              "an Arrow IPC schema, base64"},
                                             "language": {"type": "string", "enum": ["python", "sql"]},
                                             "sql": {"type": "string", "nullable": True,
                                                     "description": "a SQL job's statement; the other fields "
                                                                    "are derived from it"},
                                             "having": {"type": "string", "nullable": True},
                                             "window_key": {"type": "string", "nullable": True}}},
    "Row": {"type": "object", "required": ["key", "values"],
            "properties": {"key": {"type": "object"}, "values": {"type": "object"}}},
    "Page": {"type": "object", "required": ["job", "rows", "next_cursor", "total_rows", "generation"], "properties": {
        "job": {"type": "string"}, "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        "next_cursor": {"type": "string", "nullable": True},
        "total_rows": {"type": "integer", "description": (
            "groups in the result. Exact for a result of up to 131,072 groups and for fresh=true pages, counting "
            "only those that prefix, window_from/window_to and having keep; for a larger result, the committed "
            "count before those filters, an upper bound until compaction leaves each shard one run (counting "
            "exactly would read the whole result, which pages of a large one do not)")},
        "generation": {"type": "integer", "nullable": True}}},
    "ScanPage": {"type": "object", "required": ["job", "next_cursor", "total_rows", "files", "generation"],
                 "properties": {
        "job": {"type": "string"},
        "rows": {"type": "array", "items": {"type": "object"}, "description": "view=rows: the selected columns"},
        "files": {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "object"}}],
                  "description": "view=rows: how many live output files; view=files: them (file, key, etag, "
                                 "rows, bytes)"},
        "next_cursor": {"type": "string", "nullable": True}, "total_rows": {"type": "integer"},
        "generation": {"type": "integer", "nullable": True}}},
    "Export": {"type": "object", "required": ["url", "generation", "rows", "format", "expires_at"], "properties": {
        "url": {"type": "string", "description": "presigned GET URL of the file; no credentials needed"},
        "generation": {"type": "integer", "nullable": True, "description": "the result's generation exported"},
        "rows": {"type": "integer"}, "format": {"type": "string", "enum": ["parquet", "csv"]},
        "expires_at": {"type": "string", "format": "date-time", "description": "when the URL stops working"}}},
    "Status": {"type": "object", "required": ["job", "objects", "idle", "lag_seconds"], "properties": {
        "job": {"type": "string"},
        "objects": {"type": "object", "description": "landed, seen, mapped, merged, quarantined, waiting, "
                                                     "to_retract (counts of object versions): as of the request "
                                                     "up to 1,000 versions, past that as of counts_as_of"},
        "quarantined": {"type": "array", "items": {"type": "object"}, "description": "at most 100, by key"},
        "partials_pending": {"type": "integer", "description": "object versions with markers on the inbox's "
                             "first page of 1,000 keys (a large object's ranges count as one, complete or not)"},
        "partials_pending_more": {"type": "boolean", "description": "the inbox holds more markers than that page"},
        "rows": {"type": "integer", "description": "groups (a scan: output rows); an upper bound when rows_exact "
                                                  "is false"},
        "rows_exact": {"type": "boolean", "description": "false while a shard of the result is kept as several "
                       "runs not yet compacted (docs/results-layout.md): rows is then an upper bound"},
        "rows_read": {"type": "integer"},
        "bad_rows_skipped": {"type": "integer"}, "bytes_merged": {"type": "integer"},
        "bad_rows": {"type": "array", "items": {"type": "object"},
                     "description": "live object versions with rows skipped (key, etag, bad_rows, examples: the "
                                    "first few rows' lines and reasons), by key, at most 100"},
        "generation": {"type": "integer", "nullable": True},
        "last_reduce_at": {"type": "string", "nullable": True},
        "idle": {"type": "boolean", "description": "the result reflects every object version in the prefix"},
        "lag_seconds": {"type": "number", "description": "age of the oldest object version not yet merged"},
        "counts_as_of": {"type": "string", "format": "date-time", "nullable": True,
                         "description": "null: every count is as of the request; else the job has over 1,000 "
                                        "versions and the counts are the last reconcile's, taken then and "
                                        "followed since through the inbox (idle and lag_seconds too: at most "
                                        "one reconcile period behind)"}}},
}

SECURITY_SCHEMES = {
    "iam": {"sigv4": {"type": "apiKey", "name": "Authorization", "in": "header",
                      "description": "AWS Signature Version 4 (service execute-api)"}},
    "api_key": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
    "none": {},
}


def document(auth: str) -> dict[str, Any]:
    """The document for an API protected by `auth` (Settings.api_auth): the routes are the same, the
    security requirement is the stage's."""
    schemes = SECURITY_SCHEMES[auth]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Tally", "version": "1",
                 "description": "Streaming map/reduce on S3 events: current results of each job, and progress."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": schemes},
        "security": [{name: []} for name in schemes],
    }
