"""The benchmark's figures as tables: on the terminal with rich, and as Markdown for benchmarks/RESULTS.md."""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from . import cost

NA = "—"
MULTICORE = 1.15  # CPU time over wall time above this: the "one core" run used more than one


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _mb_s(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return NA if a is None or b is None else f"{a / b:.2f}x"


def kernel_section(results) -> Section:
    section = Section("Map kernel, one core: MB of CSV-equivalent input per second (best of "
                      f"{results.options.repeat})",
                      ["query", "format", "object MB", "Tally", "DuckDB 1 thread", "Tally / DuckDB",
                       "DuckDB, DOUBLE", "Python, BigLambda's loop", "Python csv.reader", "Tally / BigLambda's",
                       "Tally / csv.reader"])
    rows = list(results.kernels) + ([results.one_pass] if results.one_pass else [])
    multicore = False
    for row in rows:
        if row.missing:
            section.rows.append([row.query, row.fmt, NA, row.missing] + [NA] * (len(section.columns) - 4))
            continue
        tally = row.mb_s(row.tally)
        flag = "*" if row.tally.cpu_seconds > MULTICORE * row.tally.seconds else ""
        multicore |= bool(flag)
        label = row.query if row is not results.one_pass else f"{row.query} (one pass)"
        size = f"{row.object_bytes / 1e6:,.1f}" + (f" ({row.csv_bytes / 1e6:,.1f})" if row.fmt != "csv" else "")
        split, csv_reader = row.mb_s(row.python_split), row.mb_s(row.python_csv)
        section.rows.append([
            label, row.fmt, size, _mb_s(tally) + flag, _mb_s(row.mb_s(row.duckdb)),
            _ratio(tally, row.mb_s(row.duckdb)), _mb_s(row.mb_s(row.duckdb_double)),
            _mb_s(split), _mb_s(csv_reader), _ratio(tally, split), _ratio(tally, csv_reader)])
    section.notes += [
        "MB/s = MB (10^6 bytes) of the same rows as uncompressed CSV / wall seconds, for every format, so rows "
        "per second compare across formats; 'object MB' is the object's own size (CSV size in brackets).",
        "Tally: the mapper's code path without S3 (reader with only the used columns, streaming 2 MB blocks, "
        "per-job accumulator with lift/merge and spilling, codec encode of the partial) over an in-memory "
        "body, Arrow limited to 1 CPU thread and 1 I/O thread.",
        "DuckDB: the BDB SQL over the same file (page cache warm), SET threads=1, column types as the job "
        "declares them (adRevenue DECIMAL(18,6)), CSV read with quote='' escape='' (the files have no quotes; "
        "Tally's reader still handles them), result materialized into a temporary table; 'DOUBLE' declares "
        "adRevenue DOUBLE instead. Tally's and DuckDB's runs alternate, so both see the same phases of the "
        "machine's speed.",
        "Python, BigLambda's loop: its mapper's own loop (src/python/mapper.py) in Python 3: the body split on "
        "newlines, each line on ',', float(adRevenue) summed into a dict (scans: rows kept in a list); JSON "
        "lines: json.loads per line. Python csv.reader: the same with csv.reader over a text stream. On CSV the "
        "loops take their turns with Tally and DuckDB, best of N; on the other formats they run once.",
    ]
    if results.one_pass is not None:
        section.notes.append("The 'one pass' row maps every job over uservisits/ at once, as the mapper does "
                             f"for one object and end to end does for every file: {', '.join(results.one_pass_jobs)}.")
    if multicore:
        section.notes.append("* CPU time exceeded wall time by more than 15%: more than one core worked.")
    return section


def partials_section(results) -> Section:
    section = Section("Partials on the wire: bdb-agg-2c's partial of one object", [
        "format", "MB", "bytes a row", "encode ms", "decode ms", "size / Tally's"])
    if not results.partials:
        section.rows.append(["—", NA, NA, NA, NA, "skipped (needs bdb-agg-2c and csv)"])
        return section
    ours = results.partials[0]
    for measured in results.partials:
        section.rows.append([
            measured.name, f"{measured.bytes / 1e6:,.2f}", f"{measured.bytes / measured.groups:.1f}",
            f"{measured.encode_seconds * 1e3:,.0f}", f"{measured.decode_seconds * 1e3:,.0f}",
            f"{measured.bytes / ours.bytes:.2f}x"])
    section.notes.append(
        f"The partial: what the mapper writes for the benchmark's uservisits object, {ours.groups:,} rows (2c's "
        "keys are nearly all distinct, so the mapper states rows one by one); key, decimal(38,6) sum, its count "
        "and the row count. Each format is read back and compared with it; one core; best of the runs (JSON: "
        "one run). Tally's codec run-end encodes integer columns of few runs (the counts, all ones) and adds "
        "its version, the job's fingerprint and the object's metadata to the Arrow schema; the mapper writes "
        "lz4 (read once, by the reducer), the reducer keeps results and packs in zstd (read again).")
    return section


def system_section(results) -> Section:
    section = Section("Through S3 (moto on loopback)", ["measurement", "figure", "detail"])
    e2e = results.end_to_end
    if e2e is not None:
        two_cores = 2 * results.one_pass.mb_s(results.one_pass.tally) if results.one_pass else None
        share = f"{e2e.mb_s / two_cores:.0%} of 2 x the one-pass kernel ({two_cores:,.0f} MB/s)" if two_cores else ""
        section.rows.append([
            "local mode end to end", f"{e2e.mb_s:.1f} MB/s",
            f"{e2e.files} CSV files, {e2e.bytes / 1e6:,.1f} MB, first upload -> idle {e2e.seconds:.1f} s, "
            f"{e2e.workers} mapper workers, jobs {', '.join(e2e.jobs)}; {share}; bdb-agg-2a "
            + ("equals DuckDB exactly" if e2e.exact else "DIFFERS from DuckDB")])
    else:
        section.rows.append(["local mode end to end", NA, "skipped (--skip-e2e)"])
    for rate in results.merges:
        if rate.into_groups:
            section.rows.append([
                f"reducer, warm commit into a large result ({rate.job}, shards={rate.shards})",
                f"{rate.seconds:.2f} s a commit, {rate.result_groups / rate.seconds:,.0f} result groups/s",
                f"one object's partial ({rate.groups:,} groups) committed into a result of {rate.into_groups:,} "
                f"groups, giving {rate.result_groups:,} (S3 requests included; the shards the result grew into "
                f"merged in parallel); the same two merged whole in memory, one group_by: {rate.merge_seconds:.2f} s"])
            continue
        section.rows.append([
            f"reducer merge, {rate.label} partials ({rate.job}, shards={rate.shards})",
            f"{rate.partials_s:,.1f} partials/s, {rate.groups_s:,.0f} groups/s",
            f"{rate.partials} partials of {rate.groups:,} groups in all into {rate.result_groups:,} groups, "
            f"{rate.seconds:.2f} s for one Reducer.reduce_job (S3 requests included); the merge alone, in "
            f"memory: {rate.merge_groups_s:,.0f} groups/s"])
    if not results.merges:
        section.rows.append(["reducer merge", NA, "skipped"])
    for peak in results.memory:
        section.rows.append([
            f"mapper peak RSS, {peak.job}", f"{peak.peak_mib:,.0f} MiB",
            f"one {peak.object_bytes / 1e6:,.0f} MB object read from S3 as on Lambda (4 ranged GETs of 8 MiB in "
            f"flight) in a child process (VmHWM); {peak.baseline_mib:,.0f} MiB after imports; {peak.seconds:.1f} s "
            f"(moto serves each ranged GET at the cost of reading the whole object), {peak.groups:,} groups in "
            "its parts"])
    if not results.memory:
        section.rows.append(["mapper peak RSS", NA, "skipped (--rss-object-mb 0)"])
    return section


def cost_section(results) -> Section:
    section = Section(f"Cost model: the seed's {cost.SEED_DATASET_BYTES / 1e9:.1f} GB at 1,000 concurrent Lambdas",
                      ["query", "objects x MB", "mapper s", "GB-s", "Lambda requests", "S3 GET / PUT",
                       "$ (compute + requests)", "modeled s", "$ if CPU-bound", "BigLambda s / $",
                       "BigLambda $ / Tally $"])
    merge_source = ""
    for query, (est, cpu_bound, merge_source) in results.costs.items():
        published = cost.BIGLAMBDA.get(query)
        section.rows.append([
            query, f"{est.objects:,} x {results.options.object_mb:,}", f"{est.mapper_seconds:.1f}",
            f"{est.gb_seconds:,.0f}", f"{est.lambda_requests:,}", f"{est.s3_gets:,} / {est.s3_puts:,}",
            f"${est.total_usd:.4f} ({est.compute_usd:.4f} + {est.requests_usd:.4f})", f"{est.wall_seconds:,.0f}",
            f"${cpu_bound.total_usd:.4f}",
            f"{published[0]:.0f} s / ${published[1]}" if published else NA,
            f"{published[1] / est.total_usd:.1f}x" if published else NA])
    d = cost.Deployment()
    section.notes += [
        "Prices: AWS Lambda x86 $0.0000166667/GB-s and $0.20 per million requests; S3 $0.0004 per 1,000 GET, "
        "$0.005 per 1,000 PUT/LIST (us-east-1; aws.amazon.com/lambda/pricing, aws.amazon.com/s3/pricing, as "
        "of 2026-11-27).",
        f"One mapper invocation per object of {results.options.object_mb} MB (--object-mb), its partial's groups "
        "scaled from the benchmark's object (linearly up, never down: an upper bound); mappers of "
        f"{d.mapper_memory_mb} MB (one vCPU) at the measured one-core CSV kernel rate, capped at "
        f"{d.s3_streams} x {d.s3_stream_mb_s:.0f} MB/s for the mapper's {d.s3_streams} ranged S3 GETs in flight "
        f"('$ if CPU-bound' lifts that cap), plus "
        f"{d.invocation_overhead_s} s per invocation; waves of 1,000; then one {d.reducer_memory_mb} MB reducer "
        f"merging every partial's groups at the rate of Reducer.reduce_job with its S3 requests ({merge_source}), "
        f"in runs of at most {d.reduce_batch} partials and {d.reduce_max_groups:,} groups.",
        "BigLambda's figures are the seed's (published); it measured 1a/1b on rankings, the model uses the same "
        "dataset size for every query.",
    ]
    return section


def targets_section(results) -> Section:
    section = Section("Targets (issue 4)", ["target", "measured", "verdict"])

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else "PASS" if ok else "FAIL"

    csv_rows = {r.query: r for r in results.kernels if r.fmt == "csv" and r.tally is not None}
    aggregations = [csv_rows[q] for q in ("2a", "2b", "2c") if q in csv_rows]
    vs_duckdb = [r.mb_s(r.tally) / r.mb_s(r.duckdb) for r in aggregations]

    section.rows.append(["map kernel >= 1.0x DuckDB 1 thread, 2a/2b/2c CSV",
                         ", ".join(f"{r.query} {x:.2f}x" for r, x in zip(aggregations, vs_duckdb)) or NA,
                         verdict(min(vs_duckdb) >= 1.0 if vs_duckdb else None)])
    for label, loop in (("csv.reader", "python_csv"), ("BigLambda's split", "python_split")):
        ratios = [(r.query, r.mb_s(r.tally) / r.mb_s(getattr(r, loop))) for r in aggregations if getattr(r, loop)]
        section.rows.append([f"map kernel >= 3x a per-line Python loop ({label}), 2a/2b/2c CSV",
                             ", ".join(f"{q} {x:.1f}x" for q, x in ratios) or NA,
                             verdict(min(x for _, x in ratios) >= 3.0 if ratios else None)])
    big = [m for m in results.memory if m.object_bytes >= 1e9]
    section.rows.append(["mapper peak memory on a 1 GB object <= 512 MB",
                         ", ".join(f"{m.job} {m.peak_mib:.0f} MiB ({m.object_bytes / 1e6:,.0f} MB)"
                                   for m in results.memory) or NA,
                         verdict(all(m.peak_mib <= 512 for m in big) if big else None)])
    e2e, one_pass = results.end_to_end, results.one_pass
    if e2e is not None and one_pass is not None:
        share = e2e.mb_s / (2 * one_pass.mb_s(one_pass.tally))
        section.rows.append(["local end to end >= 50% of the kernel's 2-core throughput",
                             f"{share:.0%} ({e2e.mb_s:.1f} of {2 * one_pass.mb_s(one_pass.tally):,.0f} MB/s)",
                             verdict(share >= 0.5)])
    else:
        section.rows.append(["local end to end >= 50% of the kernel's 2-core throughput", NA, verdict(None)])
    two_a = results.costs.get("2a")
    limit = cost.BIGLAMBDA["2a"][1] / 5
    section.rows.append([f"modeled cost of 2a on 126.8 GB <= ${limit:.5f} (1/5 of BigLambda's)",
                         f"${two_a[0].total_usd:.4f}" if two_a else NA,
                         verdict(two_a[0].total_usd <= limit if two_a else None)])
    return section


def render_console(console: Console, sections: list[Section]) -> None:
    for section in sections:
        table = Table(title=section.title, title_justify="left", show_lines=False)
        for index, column in enumerate(section.columns):
            table.add_column(column, justify="left" if index < 2 else "right", overflow="fold")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
        for note in section.notes:
            console.print(f"  [dim]{note}[/]")


def render_markdown(sections: list[Section], machine: dict[str, str], command: str) -> str:
    lines = ["# Benchmark results", "", f"Command: `{command}`", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items() if v), ""]
    cores, load = int(machine.get("cores") or 1), float(machine.get("load average at start") or 0)
    if load > 0.5 * cores:
        lines += [f"**Busy machine: load average {load:.1f} on {cores} cores when the bench started. These "
                  "figures are noisy; do not quote them.**", ""]
    for section in sections:
        lines += [f"## {section.title}", "", "| " + " | ".join(section.columns) + " |",
                  "|" + "---|" * len(section.columns)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in section.rows]
        lines += [""] + [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
    return "\n".join(lines) + "\n"
