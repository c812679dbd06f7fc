"""`tally jobs`, `tally status [job]`, `tally query <job>` and `tally export <job>`: the HTTP API as tables, JSON
or CSV, against local mode or a deployed stage. Each returns the process's exit code (see cli.EXIT_*)."""
from __future__ import annotations

import argparse
import json
from decimal import Decimal

import simplejson

from rich.console import Console
from rich.table import Table

from tally import rows as tally_rows
from tally.client import Tally


def jobs(api: Tally, args: argparse.Namespace, console: Console) -> int:
    listed = api.jobs()
    if args.json:
        console.print_json(json.dumps(listed, default=str))
        return 0
    table = Table(title=f"{len(listed)} jobs at {api.url}")
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


def status(api: Tally, args: argparse.Namespace, console: Console) -> int:
    names = [args.job] if args.job else [job["name"] for job in api.jobs()]
    statuses = [api.status(name) for name in names]
    if args.json:
        console.print_json(json.dumps(statuses, default=str))
        return 0
    table = Table(title=f"status at {api.url}")
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
        if s.get("counts_as_of"):  # past 1,000 objects: the reconcile's counts, followed through the inbox
            console.print(f"[dim]{s['job']}: objects as counted by the reconcile at {s['counts_as_of']}[/]")
        for q in s.get("quarantined", []):
            where = f" (line {q['line']})" if q.get("line") else ""
            console.print(f"[red]quarantined[/] {s['job']}: {q['key']}: {q['reason']}{where}")
    return 0


def query(api: Tally, args: argparse.Namespace, console: Console) -> int:
    definition = next((job for job in api.jobs() if job["name"] == args.job), None)
    if definition is None:
        console.print(f"[red]error:[/] no job named {args.job!r}; `tally jobs` lists them")
        return 1
    scan = definition.get("kind") == "scan"
    if scan and (args.order_by or args.asc or args.prefix):
        console.print(f"[red]error:[/] {args.job} is a scan job: it takes no --order-by, --asc or --prefix")
        return 1
    output = args.output or ("json" if args.json else "table")
    order_by = None if scan else args.order_by or next(iter(definition["aggregates"]))
    params = {} if scan else {"order_by": order_by, "desc": not args.asc, "prefix": args.prefix}
    if args.all:
        rows, total, generation = api.results(args.job, **params), None, None
    else:
        page = api.page(args.job, limit=args.top, **params)
        rows, total, generation = page["rows"], page["total_rows"], page["generation"]
    if output == "csv":
        tally_rows.write_csv((tally_rows.flat(row, scan) for row in rows), console.file, schema=tally_rows.schema_of(definition),
                             columns=_columns(definition))
        console.file.flush()
        return 0
    rows = list(rows)
    if output == "json":
        _print_json(console, page if not args.all else {"job": args.job, "total_rows": len(rows), "rows": rows})
        return 0
    shown = f"all {len(rows):,}" if args.all else f"{'first' if scan else 'top'} {len(rows)} of {total:,}"
    what = "output rows" + ("" if args.all else f" in {page['files']} files") if scan else "groups"
    order = "" if scan else f" by {order_by}{' ascending' if args.asc else ''}"
    table = Table(title=f"{args.job}: {shown} {what}{order}" + ("" if args.all else f" (generation {generation})"))
    for name in _columns(definition):
        table.add_column(name, justify="right" if name in (definition.get("aggregates") or {}) else "left")
    for row in rows:
        flat = tally_rows.flat(row, scan)
        table.add_row(*(_cell(flat.get(name)) for name in _columns(definition)))
    console.print(table)
    return 0


def create_view(api: Tally, args: argparse.Namespace, console: Console) -> int:
    described = api.create_view(args.name, args.sql)
    if args.json:
        _print_json(console, described)
        return 0
    what = "groups by " + ", ".join(described["keys"]) if described.get("keys") else "rows"
    console.print(f"created {described['name']} over {described['prefix']} ({what}); the reconcile maps the "
                  "objects already there, and the result is complete when `tally status` says idle")
    return 0


def drop_view(api: Tally, args: argparse.Namespace, console: Console) -> int:
    answer = api.drop_view(args.name)
    if args.json:
        _print_json(console, answer)
    else:
        console.print(f"dropped {answer['job']}: its state is {answer['state']}")
    return 0


def export(api: Tally, args: argparse.Namespace, console: Console) -> int:
    answer = api.export(args.job, args.format) if args.output is None else \
        api.download(args.job, args.format, args.output)
    if args.json:
        _print_json(console, answer)
    elif args.output is None:
        console.print(f"{args.job}: generation {answer['generation']}, {answer['rows']:,} rows ({answer['format']}) "
                      f"until {answer['expires_at']} at\n{answer['url']}", soft_wrap=True, highlight=False)
    else:
        console.print(f"wrote {args.output}: {answer['rows']:,} rows of {args.job} (generation "
                      f"{answer['generation']}, {answer['format']}, {answer['bytes']:,} bytes)")
    return 0


def _print_json(console: Console, body) -> None:
    # Not rich's print_json, which reads numbers back as floats: every digit of a decimal stays.
    console.file.write(simplejson.dumps(body, use_decimal=True, indent=2, default=str) + "\n")
    console.file.flush()


def _columns(definition: dict) -> list[str]:
    if definition.get("columns"):
        return list(definition["columns"])
    if definition.get("kind") == "scan":
        return list(definition["select"])
    return [*definition["keys"], *definition["aggregates"]]


def _cell(value) -> str:
    if isinstance(value, Decimal):
        return f"{value:,}"
    return "∅" if value is None else str(value)
