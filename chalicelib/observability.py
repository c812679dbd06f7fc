"""Logs and metrics of the handlers, with the job, the object key and its version as correlation keys.

On Lambda (TALLY_LOG_FORMAT=json): Powertools' structured JSON log lines, and metrics as CloudWatch Embedded
Metric Format blobs (namespace "Tally", dimensions job and service) that CloudWatch turns into metrics without
an API call. In local mode (TALLY_LOG_FORMAT=text) the same records and the same metric sets are one readable
line each, e.g. `16:03:12 INFO tally.mapper mapped job=bdb-agg-2a key=uservisits/a.csv rows=52000`.

The engine logs through the standard library ("tally.*"); its loggers get the same handler and formatter.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import IO, Any, Callable, Iterable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .settings import Settings

NAMESPACE = "Tally"
SERVICE = "tally"
ENGINE_LOGGERS = {"tally.mapper", "tally.reducer", "tally.reconcile", "tally.garbage"}
# Keys of every Powertools record that a terminal reader does not need on each line.
_QUIET_KEYS = {"level", "location", "message", "timestamp", "service", "name", "cold_start", "function_name",
               "function_memory_size", "function_arn", "function_request_id", "xray_trace_id", "sampling_rate"}


class TextFormatter(LambdaPowertoolsFormatter):
    """Powertools' record, rendered as `time LEVEL logger message key=value ...` instead of JSON."""

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        time = str(log.get("timestamp", ""))[11:19]
        extras = " ".join(f"{key}={_short(value)}" for key, value in log.items() if key not in _QUIET_KEYS)
        return f"{time} {log.get('level', '')} {log.get('name', SERVICE)} {log.get('message', '')} {extras}".rstrip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def make_logger(settings: Settings, service: str = SERVICE, stream: IO[str] | None = None,
                engine_loggers: bool = True) -> Logger:
    """The handlers' logger; with `engine_loggers`, the engine's "tally.*" loggers write through it too."""
    # name="%(name)s": the logging record's own logger name ("tally.mapper"), resolved per record.
    formatter = TextFormatter(log_record_order=["timestamp", "level", "name", "message"], name="%(name)s") \
        if settings.log_format == "text" else None
    logger = Logger(service=service, level=settings.log_level, logger_formatter=formatter, stream=stream)
    if engine_loggers:
        copy_config_to_registered_loggers(source_logger=logger, include=ENGINE_LOGGERS)
    return logger


class Observer:
    """What the handlers return, as log lines (one per job and object version, or per job and reduce) and
    per-job metric sets: one EMF blob per job and invocation on Lambda, one log line per job locally."""

    def __init__(self, settings: Settings, logger: Logger, clock: Callable[[], dt.datetime]):
        self.emf, self.logger, self.clock = settings.log_format == "json", logger, clock

    def mapped(self, outcomes: Iterable[dict]) -> None:
        sets: dict[str, dict[str, tuple[str, list[float]]]] = defaultdict(dict)
        for outcome in outcomes:
            self.logger.info(outcome["outcome"], extra={
                "job": outcome["job"], "key": outcome["key"], "version": outcome["etag"], "rows": outcome["rows"],
                "bytes": outcome["bytes_read"], "groups": outcome["groups"], "reason": outcome["reason"]})
            if outcome["outcome"] == "fanned_out":  # a large object: its ranges are mapped (and counted) apart
                _add(sets[outcome["job"]], "ObjectsFannedOut", MetricUnit.Count, 1)
            elif outcome["outcome"] == "mapped":
                _add(sets[outcome["job"]], "RangesMapped" if outcome.get("range") else "ObjectsMapped",
                     MetricUnit.Count, 1)
                _add(sets[outcome["job"]], "BytesMapped", MetricUnit.Bytes, outcome["bytes_read"])
                _add(sets[outcome["job"]], "RowsMapped", MetricUnit.Count, outcome["rows"])
            elif outcome["outcome"] == "quarantined":
                _add(sets[outcome["job"]], "ObjectsQuarantined", MetricUnit.Count, 1)
            elif outcome["outcome"] == "failed":  # retried, and quarantined after TALLY_MAP_MAX_ATTEMPTS
                _add(sets[outcome["job"]], "MappingsFailed", MetricUnit.Count, 1)
        self._emit(sets)

    def reduced(self, reports: Iterable[dict]) -> None:
        now = self.clock()
        sets: dict[str, dict[str, tuple[str, list[float]]]] = defaultdict(dict)
        backlog: dict[str, float] = {}
        for report in reports:
            if report["merged"] or report["retracted"] or report["dropped"]:
                self.logger.info("reduced", extra={k: v for k, v in report.items() if k != "landed"})
            if report.get("missing") or report.get("repaired"):
                # Lost state: never routine. An alarm on StateObjectsMissing pages someone.
                _add(sets[report["job"]], "StateObjectsMissing", MetricUnit.Count, report.get("missing", 0))
                _add(sets[report["job"]], "LostVersionsRepaired", MetricUnit.Count, report.get("repaired", 0))
            if report.get("pending") is not None:  # the job's last run this tick listed its inbox last: it wins
                since = report.get("pending_since")
                backlog[report["job"]] = _age(now, since) if since else 0.0
            if not (report["merged"] or report["retracted"]):
                continue
            job = sets[report["job"]]
            _add(job, "PartialsMerged", MetricUnit.Count, report["merged"])
            _add(job, "ObjectsRetracted", MetricUnit.Count, report["retracted"])
            for landed in report.get("landed") or ():
                # Event time (the object landed in S3) to the commit that put it in the served result.
                _lag(job, _age(now, landed))
        for name, age in backlog.items():
            # Every tick, merged or not: how long the oldest marker had waited when the job's last run listed
            # the inbox. Below the lag of what that run merged when it is healthy; growing when it is stuck.
            _lag(sets[name], age)
        self._emit(sets)

    def _emit(self, sets: dict[str, dict[str, tuple[str, list[float]]]]) -> None:
        for job, metrics in sorted(sets.items()):
            if self.emf:
                emf = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
                emf.add_dimension("job", job)
                for name, (unit, values) in metrics.items():
                    for value in values:
                        emf.add_metric(name=name, unit=unit, value=value)
                emf.flush_metrics()
            elif any(name != "LagSeconds" or any(values) for name, (_, values) in metrics.items()):
                # A terminal line for every idle job on every tick (local mode reduces every 2 s) would drown
                # the others: nothing merged and nothing waiting is not printed.
                summary = {name: _summarize(name, values) for name, (_, values) in metrics.items()}
                self.logger.info("metrics", extra={"job": job, **summary})


def _age(now: dt.datetime, at: str) -> float:
    return round(max((now - dt.datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds(), 0.0), 3)


def _lag(metrics: dict, seconds: float) -> None:
    metrics.setdefault("LagSeconds", (MetricUnit.Seconds, []))[1].append(seconds)


def _add(metrics: dict, name: str, unit: MetricUnit, value: float) -> None:
    entry = metrics.setdefault(name, (unit, [0]))
    entry[1][0] += value


def _summarize(name: str, values: list[float]) -> Any:
    if name == "LagSeconds":
        return f"max {max(values):.1f}" if values else None
    return values[0] if len(values) == 1 else values
