"""Job definitions: one module per job, each defining JOB. Modules starting with `_` hold shared pieces."""
