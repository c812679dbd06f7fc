"""Least-privilege IAM policies, one per function and stage, generated from the stage's bucket names.

Chalice gives each function its own role, with the policy file named by `iam_policy_file` under the stage's
`lambda_functions.<function>` in .chalice/config.json, and reads that file when it deploys or packages. So the
files are generated here and committed, and `tests/test_policies.py` fails when they drift from this module:

    python -m chalicelib.local.policies          # rewrite .chalice/policy-<stage>-<function>.json and the
                                                 # stages' iam_policy_file entries in .chalice/config.json

Every function may list both buckets: without s3:ListBucket, S3 answers 403 instead of 404 for a key that
is gone, and the mapper, the reducer and the API each treat a missing key as a normal outcome.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .buckets import CONFIG, stage_buckets

APP = "tally"
MAP_OBJECT, MAP_RANGE, REDUCE, RECONCILE, API = (
    "map_object", "map_range", "reduce_results", "reconcile_inputs", "api_handler")
FUNCTIONS = (MAP_OBJECT, MAP_RANGE, REDUCE, RECONCILE, API)


def function_name(stage: str, handler: str, app: str = APP) -> str:
    """The Lambda function Chalice deploys for `handler`: the REST API's is named after the app and stage alone."""
    return f"{app}-{stage}" if handler == API else f"{app}-{stage}-{handler}"


def failure_queue(stage: str, app: str = APP) -> str:
    """The SQS queue the mappers' failed asynchronous invocations go to (their on-failure destination)."""
    return f"{app}-{stage}-failures"


def policy_file(stage: str, handler: str) -> str:
    return f"policy-{stage}-{handler}.json"


def policies(stage: str, config_path: Path = CONFIG) -> dict[str, dict]:
    """{handler: policy document} for the stage's functions."""
    buckets = stage_buckets(stage, config_path)
    input_bucket, state_bucket = f"arn:aws:s3:::{buckets.input}", f"arn:aws:s3:::{buckets.state}"

    def allow(sid: str, actions: list[str], resource: str | list[str]) -> dict:
        return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}

    def invoke(handler: str) -> dict:
        return allow("Invoke" + "".join(part.title() for part in handler.split("_")), ["lambda:InvokeFunction"],
                     f"arn:aws:lambda:*:*:function:{function_name(stage, handler)}")

    def logs(handler: str) -> dict:
        group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(stage, handler)}"
        return allow("OwnLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                     [group, group + ":*"])

    # Mappers read pinned versions; the reducer, the reconcile and the API only HEAD input (s3:GetObject).
    read_input = allow("ReadInputObjects", ["s3:GetObject", "s3:GetObjectVersion"], input_bucket + "/*")
    head_input = allow("HeadInputObjects", ["s3:GetObject"], input_bucket + "/*")
    write_state = allow("ReadWriteState", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], state_bucket + "/*")
    read_state = allow("ReadState", ["s3:GetObject"], state_bucket + "/*")
    list_both = allow("ListBothBuckets", ["s3:ListBucket"], [input_bucket, state_bucket])
    # The API writes exports and their garbage records (engine/export.py), under a prefix of their own: never
    # the state a result is made of, and it deletes nothing (the collector does).
    write_exports = allow("WriteExports", ["s3:PutObject"], state_bucket + "/exports/*")
    # ... and views' definitions (engine/views.py: created and dropped by new versions, never overwritten or
    # deleted); a dropped view's state is deleted by the reconcile.
    write_views = allow("WriteViews", ["s3:PutObject"], state_bucket + "/views/*")
    # Lambda sends a mapper's failed asynchronous invocation to its on-failure destination with the mapper's
    # own role.
    failures = allow("SendFailures", ["sqs:SendMessage"], f"arn:aws:sqs:*:*:{failure_queue(stage)}")
    statements = {
        MAP_OBJECT: [read_input, write_state, list_both, invoke(MAP_RANGE), failures],
        MAP_RANGE: [read_input, write_state, list_both, failures],
        REDUCE: [head_input, write_state, list_both],
        RECONCILE: [head_input, write_state, list_both, invoke(MAP_OBJECT)],
        API: [head_input, read_state, write_exports, write_views, list_both],
    }
    return {handler: {"Version": "2012-10-17", "Statement": [*statements[handler], logs(handler)]}
            for handler in FUNCTIONS}


def stages(config_path: Path = CONFIG) -> list[str]:
    return sorted(json.loads(config_path.read_text()).get("stages", {}))


def rendered(config_path: Path = CONFIG) -> dict[Path, str]:
    """Every generated file's path and text: each stage's policies, and the config that names them."""
    config = json.loads(config_path.read_text())
    files = {}
    for stage in stages(config_path):
        entries = config["stages"][stage].setdefault("lambda_functions", {})
        for handler, document in policies(stage, config_path).items():
            entries.setdefault(handler, {})["iam_policy_file"] = policy_file(stage, handler)
            files[config_path.parent / policy_file(stage, handler)] = _json(document)
    files[config_path] = _json(config)
    return files


def _json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str]) -> int:
    config_path = Path(argv[0]) if argv else CONFIG
    for path, text in rendered(config_path).items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
