"""Tally's engine: everything the Lambda handlers in app.py call, vendored into the Lambda package."""
