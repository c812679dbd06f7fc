"""The engine: what the handlers call. It depends on aggregation, formats and an injected ObjectStore."""
