"""`tally jobs`, `tally status [job]` and `tally query <job>`: the HTTP API as tables, against local mode or a
deployed stage (--api URL). Each returns the process's exit code (see cli.EXIT_*)."""
from __future__ import annotations

import argparse
import json
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from .client import TallyClient


def jobs(api: TallyClient, args: argparse.Namespace, console: Console) -> int:
    listed = api.jobs()
    if args.json:
        console.print_json(json.dumps(listed, default=str))
        return 0
    table = Table(title=f"{len(listed)} jobs at {api.base_url}")
    for column in ("job", "input", "format", "keys / filter", "aggregates / select"):
        table.add_column(column)
    for job in listed:
        scan = job.get("kind") == "scan"
        table.add_row(job["name"], f"{job.get('prefix', '')}*{job.get('suffix') or ''}",
                      str((job.get("format") or {}).get("kind", "")),
                      (job.get("filter") or "") if scan else "\n".join(f"{k} = {v}" for k, v in job["keys"].items()),
                      "\n".join(f"{k} = {v}" for k, v in job["select" if scan else "aggregates"].items()))
    console.print(table)
    return 0


def status(api: TallyClient, args: argparse.Namespace, console: Console) -> int:
    names = [args.job] if args.job else [job["name"] for job in api.jobs()]
    statuses = [api.status(name) for name in names]
    if args.json:
        console.print_json(json.dumps(statuses, default=str))
        return 0
    table = Table(title=f"status at {api.base_url}")
    for column, justify in (("job", "left"), ("state", "left"), ("merged/landed", "right"), ("waiting", "right"),
                            ("quarantined", "right"), ("lag s", "right"), ("groups", "right"),
                            ("rows read", "right"), ("last reduce", "left")):
        table.add_column(column, justify=justify)
    for s in statuses:
        o = s["objects"]
        table.add_row(s["job"], "[green]idle[/]" if s["idle"] else "[yellow]working[/]",
                      f"{o['merged']}/{o['landed']}", str(o["waiting"] + o.get("to_retract", 0)),
                      f"[red]{o['quarantined']}[/]" if o["quarantined"] else "0",
                      f"{s.get('lag_seconds', 0):.1f}", f"{s['rows']:,}", f"{s['rows_read']:,}",
                      str(s.get("last_reduce_at") or "never"))
    console.print(table)
    for s in statuses:
        for q in s.get("quarantined", []):
            where = f" (line {q['line']})" if q.get("line") else ""
            console.print(f"[red]quarantined[/] {s['job']}: {q['key']}: {q['reason']}{where}")
    return 0


def query(api: TallyClient, args: argparse.Namespace, console: Console) -> int:
    definition = next((job for job in api.jobs() if job["name"] == args.job), None)
    if definition is None:
        console.print(f"[red]error:[/] no job named {args.job!r}; `tally jobs` lists them")
        return 1
    if definition.get("kind") == "scan":
        return _scan_query(api, args, definition, console)
    order_by = args.order_by or next(iter(definition["aggregates"]))
    page = api.results(args.job, limit=args.top, order_by=order_by, desc="false" if args.asc else "true",
                       prefix=args.prefix)
    if args.json:
        console.print_json(json.dumps(page, default=str))
        return 0
    table = Table(title=f"{args.job}: top {len(page['rows'])} of {page['total_rows']:,} groups by {order_by}"
                        f"{' ascending' if args.asc else ''} (generation {page['generation']})")
    for name in definition["keys"]:
        table.add_column(name)
    for name in definition["aggregates"]:
        table.add_column(name, justify="right")
    for row in page["rows"]:
        table.add_row(*(_cell(v) for v in row["key"].values()), *(_cell(v) for v in row["values"].values()))
    console.print(table)
    return 0


def _scan_query(api: TallyClient, args: argparse.Namespace, definition: dict, console: Console) -> int:
    """A scan job's first output rows (its rows have no order to rank them by)."""
    if args.order_by or args.asc or args.prefix:
        console.print(f"[red]error:[/] {args.job} is a scan job: it takes no --order-by, --asc or --prefix")
        return 1
    page = api.results(args.job, limit=args.top)
    if args.json:
        console.print_json(json.dumps(page, default=str))
        return 0
    table = Table(title=f"{args.job}: first {len(page['rows'])} of {page['total_rows']:,} output rows "
                        f"in {page['files']} files (generation {page['generation']})")
    for name in definition["select"]:
        table.add_column(name)
    for row in page["rows"]:
        table.add_row(*(_cell(row[name]) for name in definition["select"]))
    console.print(table)
    return 0


def _cell(value) -> str:
    if isinstance(value, Decimal):
        return f"{value:,}"
    return "∅" if value is None else str(value)
