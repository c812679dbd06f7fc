"""The committed IAM policies are the generator's (chalicelib/local/policies.py), and each is least privilege
for its function: what it must do on AWS, and nothing the others need."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.local.policies import API, FUNCTIONS, MAP_OBJECT, MAP_RANGE, RECONCILE, REDUCE, policies, rendered

CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"
STAGES = sorted(json.loads(CONFIG.read_text())["stages"])


def test_committed_policy_files_and_config_entries_are_what_the_generator_writes():
    files = rendered(CONFIG)
    assert {path.name for path in files} == {"config.json"} | {
        f"policy-{stage}-{handler}.json" for stage in STAGES for handler in FUNCTIONS}
    stale = [path.name for path, text in files.items() if not path.exists() or path.read_text() != text]
    assert stale == [], "run `python -m chalicelib.local.policies` and commit the files it writes"
    unused = {p.name for p in CONFIG.parent.glob("policy-*.json")} - {p.name for p in files}
    assert unused == set()


def allowed(document: dict) -> dict[str, set[str]]:
    """{action: resources} over the document's statements."""
    grants: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            grants.setdefault(action, set()).update(resources)
    return grants


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_gets_only_what_it_does(stage):
    grants = {handler: allowed(document) for handler, document in policies(stage, CONFIG).items()}
    state, input_ = f"arn:aws:s3:::tally-state-{stage}/*", f"arn:aws:s3:::tally-input-{stage}/*"
    for handler, granted in grants.items():
        assert not any("*" in action for action in granted), handler
        assert granted["s3:ListBucket"] == {f"arn:aws:s3:::tally-input-{stage}", f"arn:aws:s3:::tally-state-{stage}"}
        assert all("/aws/lambda/tally-" + stage in r for r in granted["logs:PutLogEvents"]), handler
        assert granted["s3:GetObject"] == {input_, state}, handler
    # The API reads, and writes exports only: nothing else written, nothing deleted, invoked or sent.
    assert set(grants[API]) == {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "logs:CreateLogGroup",
                                "logs:CreateLogStream", "logs:PutLogEvents"}
    assert grants[API]["s3:PutObject"] == {f"arn:aws:s3:::tally-state-{stage}/exports/*",
                                           f"arn:aws:s3:::tally-state-{stage}/views/*"}
    for handler in (MAP_OBJECT, MAP_RANGE, REDUCE, RECONCILE):
        assert grants[handler]["s3:PutObject"] == grants[handler]["s3:DeleteObject"] == {state}, handler
    assert {h for h, g in grants.items() if "s3:GetObjectVersion" in g} == {MAP_OBJECT, MAP_RANGE}
    invokes = {h: g["lambda:InvokeFunction"] for h, g in grants.items() if "lambda:InvokeFunction" in g}
    assert invokes == {MAP_OBJECT: {f"arn:aws:lambda:*:*:function:tally-{stage}-map_range"},
                       RECONCILE: {f"arn:aws:lambda:*:*:function:tally-{stage}-map_object"}}
    sends = {h: g["sqs:SendMessage"] for h, g in grants.items() if "sqs:SendMessage" in g}
    assert sends == {h: {f"arn:aws:sqs:*:*:tally-{stage}-failures"} for h in (MAP_OBJECT, MAP_RANGE)}
