"""A user map function: the browser family parsed out of userAgent, which no single expression can state
(the first matching of several patterns wins, in order). Revenue and visits per browser family."""
import pyarrow as pa
import pyarrow.compute as pc

from chalicelib.jobs import Job
from reducers.tables import TABLES

USERVISITS = TABLES["uservisits"]

# Order matters: Chrome's and Opera's agents also say "Safari" or "Mozilla".
FAMILIES = [("bot", r"(?i)bot|crawler|spider"), ("Opera", r"Opera"), ("MSIE", r"MSIE"),
            ("Firefox", r"Firefox"), ("Safari", r"Safari|AppleWebKit")]


def browser_family(batch: pa.Table) -> pa.Table:
    family = pa.repeat(pa.scalar("other"), batch.num_rows)
    for name, pattern in reversed(FAMILIES):
        family = pc.if_else(pc.match_substring_regex(batch["userAgent"], pattern), name, family)
    return pa.table({"browser": family, "adRevenue": batch["adRevenue"]})


JOB = Job(
    name="visits-by-browser",
    description="Visits and ad revenue per browser family (parsed from userAgent by a map function)",
    prefix=USERVISITS.prefix,
    format=USERVISITS.format,
    map=browser_family,
    map_columns={"browser": "string", "adRevenue": "decimal(18,6)"},
    map_reads=["userAgent", "adRevenue"],
    keys={"browser": "browser"},
    aggregates={"visits": "count()", "revenue": "sum(adRevenue)"},
)
