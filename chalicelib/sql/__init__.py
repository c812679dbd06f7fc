"""Jobs written in SQL: one SELECT over a named table, parsed with sqlglot (DuckDB's dialect) into the job
model, whose keys, aggregates, filter and select then hold SQL expression text that compiles to the same
`Expression` objects Python-syntax jobs compile to."""
