"""Local mode: the same handlers on one machine, with moto's S3 server on loopback standing in for AWS.
Nothing here is imported by the Lambda handlers."""
