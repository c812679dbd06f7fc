"""Tally's Lambda handlers. Each one parses its input, calls the engine, and reports; nothing else lives here."""
from functools import wraps
from urllib.parse import unquote

from chalice import Chalice, IAMAuthorizer, Rate, Response

from chalicelib import openapi
from chalicelib.api import ViewRequest, dashboard_html, error_body, to_json
from chalicelib.engine.export import parse_format
from chalicelib.engine.mapper import outcomes_as_dicts
from chalicelib.engine.reducer import raise_failures
from chalicelib.engine.results import ResultsQuery, group_query_fresh
from chalicelib.engine.scan_results import ScanQuery
from chalicelib.errors import MappingFailed, TallyError
from chalicelib.observability import Observer, make_logger
from chalicelib.runtime import get_runtime, utc_now
from chalicelib.settings import Settings

# Decorator arguments are evaluated at import, so the bucket name and the schedules come from the stage's
# environment here.
SETTINGS = Settings.from_env()
# configure_logs=False: Chalice would add its own handler to the "tally" logger, which Powertools also writes
# through, and every record would appear twice (once as "tally - INFO - ...", once as JSON).
app = Chalice(app_name="tally", configure_logs=False)
logger = make_logger(SETTINGS)
observe = Observer(SETTINGS, logger, utc_now)
# The reconcile stops handing objects over after this (its next run goes on), leaving the rest of its timeout
# in .chalice/config.json (300 s) to the listings of the jobs after it and to the cleanup.
RECONCILE_BUDGET_SECONDS = 180
ROUTE_AUTH = {"iam": {"authorizer": IAMAuthorizer()}, "api_key": {"api_key_required": True}, "none": {}}[
    SETTINGS.api_auth]


def json_api(view, success: int = 200):
    @wraps(view)
    def respond(*args, **kwargs):
        try:
            status, body = success, view(*args, **kwargs)
        except TallyError as error:
            status, body = error_body(error)
        return Response(body=to_json(body), status_code=status, headers={"Content-Type": "application/json"})

    return respond


def created(view):
    return json_api(view, 201)


@app.on_s3_event(bucket=SETTINGS.input_bucket, events=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                 name="map_object")
def map_object(event):
    # event.to_dict(), not event.key: Chalice's S3Event reads only Records[0].
    return observed(lambda: get_runtime().mapper.handle(event.to_dict()))


@app.lambda_function(name="map_range")
def map_range(event, context):
    # One byte range of a large object, invoked asynchronously by map_object (locally: by the worker pool).
    return observed(lambda: get_runtime().mapper.handle_range(event))


def observed(handle):
    try:
        outcomes = outcomes_as_dicts(handle())
    except MappingFailed as failed:  # what did map is logged and counted too; then Lambda retries
        observe.mapped(outcomes_as_dicts(failed.outcomes))
        raise
    observe.mapped(outcomes)
    return outcomes


@app.schedule(Rate(SETTINGS.reduce_every_minutes, unit=Rate.MINUTES), name="reduce_results")
def reduce_results(event):
    reports = get_runtime().reducer.reduce_all()
    observe.reduced([dict(report.__dict__) for report in reports])
    raise_failures(reports)  # a failed job fails the invocation, after its errors are logged and counted
    return [dict(report.__dict__) for report in reports]


@app.schedule(Rate(SETTINGS.reconcile_every_minutes, unit=Rate.MINUTES), name="reconcile_inputs")
def reconcile_inputs(event):
    # Finds what events missed (dropped, throttled, or before the job existed) and hands it to map_object
    # (asynchronously: this function only lists, plans and cleans up); notes removals.
    reports = [
        {"job": r.job, "mapped": len(r.mapped), "dispatched": r.dispatched, "removed": r.removed,
         "orphans_deleted": r.orphans_deleted, "left": r.left}
        for r in get_runtime().reconciler.reconcile_all(max_seconds=RECONCILE_BUDGET_SECONDS)
    ]
    logger.info("reconciled", extra={"reports": reports})
    return reports


@app.route("/", methods=["GET"])
def dashboard():
    # Public: a static page with no data in it; it reads the API below (with the key it asks for, if any).
    return Response(body=dashboard_html(), status_code=200, headers={"Content-Type": "text/html; charset=utf-8"})


@app.route("/openapi.json", methods=["GET"])
@json_api
def openapi_document():
    return openapi.document(SETTINGS.api_auth)


@app.route("/jobs", methods=["GET"], **ROUTE_AUTH)
@json_api
def list_jobs():
    return {"jobs": [job.describe() for job in get_runtime().jobs]}


@app.route("/jobs", methods=["POST"], **ROUTE_AUTH)
@created
def create_view():
    # A view: a SQL job created at run time (engine/views.py); mappers and reducers pick it up within a minute.
    request = ViewRequest.from_body(app.current_request.raw_body)
    return get_runtime().jobs.create(request.name, request.sql).describe()


@app.route("/jobs/{job}", methods=["DELETE"], **ROUTE_AUTH)
@json_api
def drop_view(job):
    return get_runtime().jobs.drop(job).dropped_description()


@app.route("/jobs/{job}/results", methods=["GET"], **ROUTE_AUTH)
@json_api
def job_results(job):
    runtime = get_runtime()
    definition = runtime.jobs.get(job)
    if definition.is_scan:  # output rows (or the live output files), not groups
        return runtime.scan_results.page(definition, ScanQuery.from_params(app.current_request.query_params))
    query = ResultsQuery.from_params(definition, app.current_request.query_params)
    page = runtime.results.page(definition, query)
    return {"job": job, "generation": page.generation, "total_rows": page.total_rows, "rows": page.rows,
            "next_cursor": page.next_cursor}


@app.route("/jobs/{job}/results/{key}", methods=["GET"], **ROUTE_AUTH)
@json_api
def job_group(job, key):
    runtime = get_runtime()
    fresh = group_query_fresh(app.current_request.query_params)
    # API Gateway (and Chalice's local gateway) pass path parameters still percent-encoded.
    return runtime.results.group(runtime.jobs.get(job), unquote(key), fresh)


@app.route("/jobs/{job}/status", methods=["GET"], **ROUTE_AUTH)
@json_api
def job_status(job):
    runtime = get_runtime()
    return runtime.status.status(runtime.jobs.get(job))


@app.route("/jobs/{job}/export", methods=["GET"], **ROUTE_AUTH)
@json_api
def job_export(job):
    # Writes the generation's file once (the first request), then every request gets a presigned URL to it.
    runtime = get_runtime()
    fmt = parse_format(app.current_request.query_params)
    return runtime.exporter.export(runtime.jobs.get(job), fmt).as_dict()
