"""`tally package` (`chalice package --pkg-format terraform` plus the failure queue), offline from the
wheelhouse `make test` prepares, for every stage: the package declares the S3 subscription, the schedules and
the API (protected), each function's memory, timeout, own role and least-privilege policy, and the mappers'
on-failure destination; it puts the dependencies and the job definitions in a shared layer
(`automatic_layer`) beside a small function zip, stays inside Lambda's size limit, and its handler maps every
record of an S3 event when run from the extracted function zip and layer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = sorted(CONFIG["stages"])
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code and all its layers, unzipped
LAYER_SITE_PACKAGES = "python/lib/python3.11/site-packages"  # where Lambda finds a layer's modules (/opt/...)
# (memory MB, timeout s) of every function, in every stage; Chalice's default is 128 MB / 60 s.
SIZES = {"map_object": (1769, 900), "map_range": (1769, 900), "reduce_results": (3008, 120),
         "reconcile_inputs": (1769, 300), "api_handler": (1024, 30)}
_built: dict[str, Path] = {}  # one package per stage for the whole module (about 10 s each)


def packaged(stage: str, tmp_path_factory) -> Path:
    if stage not in _built:
        assert (WHEELHOUSE / ".complete").exists(), "no wheelhouse: run `make test`, which downloads it first"
        out = tmp_path_factory.mktemp(f"terraform-{stage}")
        env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
               "AWS_DEFAULT_REGION": "us-east-1"}
        tally = Path(sys.executable).with_name("tally")
        result = subprocess.run([str(tally), "package", "--stage", stage, str(out)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "Could not install dependencies" not in output, output
        _built[stage] = out
    return _built[stage]


@pytest.fixture(scope="module", params=STAGES)
def stage(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def package(stage, tmp_path_factory) -> Path:
    return packaged(stage, tmp_path_factory)


@pytest.fixture(scope="module")
def dev_package(tmp_path_factory) -> Path:
    """For what does not vary by stage: the zips and the packaged handler."""
    return packaged("dev", tmp_path_factory)


def resources(package: Path, document: str = "chalice.tf.json") -> dict:
    return json.loads((package / document).read_text())["resource"]


def policy(declared: dict, handler: str) -> dict:
    role = declared["aws_lambda_function"][handler]["role"].removeprefix("${aws_iam_role.").removesuffix(".arn}")
    [attached] = [p for p in declared["aws_iam_role_policy"].values() if p["role"] == f"${{aws_iam_role.{role}.id}}"]
    return json.loads(attached["policy"])


def grants(document: dict) -> dict[str, set[str]]:
    granted: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            granted.setdefault(action, set()).update(resources_)
    return granted


def test_terraform_declares_mapper_subscription_schedule_and_protected_api(package, stage):
    declared = resources(package)
    functions = declared["aws_lambda_function"]
    environment = functions["map_object"]["environment"]["variables"]
    assert environment["TALLY_INPUT_BUCKET"] == f"tally-input-{stage}"
    assert environment["TALLY_STATE_BUCKET"] == f"tally-state-{stage}"

    [notification] = declared["aws_s3_bucket_notification"].values()
    assert notification["bucket"] == f"tally-input-{stage}"
    [subscription] = notification["lambda_function"]
    assert subscription["events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert "map_object" in subscription["lambda_function_arn"]

    # The rates come from the stage's TALLY_REDUCE_EVERY_MINUTES / TALLY_RECONCILE_EVERY_MINUTES.
    schedules = {name: rule["schedule_expression"] for name, rule in declared["aws_cloudwatch_event_rule"].items()}
    assert schedules == {"reduce_results-event": "rate(1 minute)", "reconcile_inputs-event": "rate(15 minutes)"}
    assert declared["aws_api_gateway_rest_api"]["rest_api"]["body"] == "${local.chalice_api_swagger}"
    swagger = json.loads(json.loads((package / "chalice.tf.json").read_text())["locals"]["chalice_api_swagger"])
    methods = {path: spec for path, item in swagger["paths"].items() for verb, spec in item.items() if verb == "get"}
    assert set(methods) == {"/", "/openapi.json", "/jobs", "/jobs/{job}/results", "/jobs/{job}/results/{key}",
                            "/jobs/{job}/export", "/jobs/{job}/status"}
    # The data needs SigV4; the page and the API description are public.
    assert all(spec["security"] == [{"sigv4": []}] for path, spec in methods.items() if path.startswith("/jobs"))
    assert "security" not in methods["/"] and "security" not in methods["/openapi.json"]
    # And every function, reading its own environment on Lambda, agrees (and starts: "none" would be refused).
    for function in functions.values():
        on_lambda = {**function["environment"]["variables"], "AWS_LAMBDA_FUNCTION_NAME": function["function_name"]}
        assert Settings.from_env(on_lambda).api_auth == "iam", function["function_name"]


def test_every_function_has_its_own_explicit_memory_and_timeout(package):
    import app

    functions = resources(package)["aws_lambda_function"]
    assert {name: (f["memory_size"], f["timeout"]) for name, f in functions.items()} == SIZES
    assert {name: (c["lambda_memory_size"], c["lambda_timeout"]) for name, c in CONFIG["lambda_functions"].items()
            } == SIZES  # set in config.json, not Chalice's defaults that happen to match
    # The reconcile stops handing objects over with time left for the listings and the cleanup.
    assert app.RECONCILE_BUDGET_SECONDS <= SIZES["reconcile_inputs"][1] - 60


def test_each_function_has_its_own_role_with_its_own_least_privilege_policy(package, stage):
    declared = resources(package)
    functions = declared["aws_lambda_function"]
    roles = {name: function["role"] for name, function in functions.items()}
    assert len(set(roles.values())) == len(roles) == len(declared["aws_iam_role"])
    for handler in functions:
        assert policy(declared, handler) == json.loads(
            (ROOT / ".chalice" / f"policy-{stage}-{handler}.json").read_text()), handler
    granted = {handler: grants(policy(declared, handler)) for handler in functions}
    # The API reads, and writes exports only.
    assert not set(granted["api_handler"]) & {"s3:DeleteObject", "lambda:InvokeFunction", "sqs:SendMessage"}
    assert granted["api_handler"]["s3:PutObject"] == {f"arn:aws:s3:::tally-state-{stage}/exports/*",
                                                      f"arn:aws:s3:::tally-state-{stage}/views/*"}
    assert not any(action.endswith("*") for actions in granted.values() for action in actions)
    # The reconcile hands objects to map_object, map_object ranges to map_range; nothing else invokes.
    name = {handler: function["function_name"] for handler, function in functions.items()}
    invokes = {handler: g["lambda:InvokeFunction"] for handler, g in granted.items() if "lambda:InvokeFunction" in g}
    assert invokes == {"reconcile_inputs": {f"arn:aws:lambda:*:*:function:{name['map_object']}"},
                       "map_object": {f"arn:aws:lambda:*:*:function:{name['map_range']}"}}


def test_the_mappers_failed_invocations_go_to_the_stages_failure_queue(package, stage):
    declared, added = resources(package), resources(package, "failures.tf.json")
    assert not set(declared) & set(added) - {"aws_iam_role_policy"}  # terraform merges the two files
    [(queue_id, queue)] = added["aws_sqs_queue"].items()
    assert queue["name"] == f"tally-{stage}-failures" and queue["message_retention_seconds"] == 14 * 24 * 3600
    configs = added["aws_lambda_function_event_invoke_config"]
    assert set(configs) == {"map_object", "map_range"}
    for handler, config in configs.items():
        assert config["function_name"] == f"${{aws_lambda_function.{handler}.function_name}}"
        assert config["destination_config"] == {"on_failure": {"destination": f"${{aws_sqs_queue.{queue_id}.arn}}"}}
        assert config["maximum_retry_attempts"] == 2
        # Lambda sends the record with the function's own role, which must allow it before the config is made.
        [depends] = config["depends_on"]
        assert depends.removeprefix("aws_iam_role_policy.") in declared["aws_iam_role_policy"]
        assert grants(policy(declared, handler))["sqs:SendMessage"] == {f"arn:aws:sqs:*:*:{queue['name']}"}


def test_every_function_runs_on_the_shared_dependency_layer(package):
    declared = resources(package)
    [(name, layer)] = declared["aws_lambda_layer_version"].items()
    assert layer["compatible_runtimes"] == ["python3.11"] and layer["filename"].endswith("layer-deployment.zip")
    for function in declared["aws_lambda_function"].values():
        assert function["layers"] == [f"${{aws_lambda_layer_version.{name}.arn}}"]
        assert function["filename"].endswith("/deployment.zip")


def contents(archive_path: Path) -> tuple[set[str], int]:
    with zipfile.ZipFile(archive_path) as archive:
        return set(archive.namelist()), sum(info.file_size for info in archive.infolist())


def test_zips_ship_the_engine_the_jobs_and_the_dependencies_within_lambda_limits(dev_package):
    code, code_unzipped = contents(dev_package / "deployment.zip")
    layer, layer_unzipped = contents(dev_package / "layer-deployment.zip")
    assert {"app.py", "chalicelib/engine/mapper.py", "chalicelib/engine/export.py", "chalicelib/dashboard.html"} <= code
    assert not any(name.startswith("tally/") or "/site-packages/tally/" in name for name in code | layer), \
        "the Python client (tally/) is not part of the service"
    assert not any(name.startswith(("pyarrow/", "pydantic_core/")) for name in code)  # in the layer
    site = LAYER_SITE_PACKAGES + "/"
    assert {site + "reducers/bdb_agg_2a.py", site + "reducers/page_latency.py"} <= layer
    for dependency in ("pyarrow", "pydantic_core", "aws_lambda_powertools", "simplejson"):
        assert any(name.startswith(f"{site}{dependency}/") for name in layer), dependency
    total = code_unzipped + layer_unzipped
    print(f"\ndeployment.zip: {(dev_package / 'deployment.zip').stat().st_size / 2**20:.2f} MiB zipped, "
          f"{code_unzipped / 2**20:.2f} MiB unzipped; layer-deployment.zip: "
          f"{(dev_package / 'layer-deployment.zip').stat().st_size / 2**20:.1f} MiB zipped, "
          f"{layer_unzipped / 2**20:.1f} MiB unzipped; total {total / 2**20:.1f} MiB of "
          f"{LAMBDA_UNZIPPED_LIMIT / 2**20:.0f} MiB")
    assert total < LAMBDA_UNZIPPED_LIMIT, f"{total / 2**20:.0f} MiB unzipped"


PACKAGED_HANDLER = r"""
import json, sys
from moto import mock_aws
import boto3
with mock_aws():
    s3 = boto3.client("s3", region_name="us-east-1")
    for bucket in ("tally-input-dev", "tally-state-dev"):
        s3.create_bucket(Bucket=bucket)
    records = []
    for key, rows in (("uservisits/a b.csv", "1.2.3.4,u,2001-01-01,1.5,ua,USA,USA-EN,w,1\n"),
                      ("uservisits/c.csv", "5.6.7.8,u,2001-01-01,2.5,ua,USA,USA-EN,w,1\n")):
        etag = s3.put_object(Bucket="tally-input-dev", Key=key, Body=rows)["ETag"].strip('"')
        records.append({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": "tally-input-dev"},
            "object": {"key": key.replace(" ", "+"), "size": len(rows), "eTag": etag}}})
    import app, chalicelib, pyarrow, reducers
    assert chalicelib.__file__.startswith(sys.argv[1]), chalicelib.__file__
    assert pyarrow.__file__.startswith(sys.argv[2]) and reducers.__file__.startswith(sys.argv[2])
    outcomes = app.app.handler_map["map_object"]({"Records": records}, None)
    print(json.dumps(sorted({(o["key"], o["outcome"]) for o in outcomes})))
"""


def test_packaged_handler_maps_every_record_of_an_s3_event(dev_package, tmp_path):
    extracted, layer = tmp_path / "task", tmp_path / "opt"
    with zipfile.ZipFile(dev_package / "deployment.zip") as archive:
        archive.extractall(extracted)
    with zipfile.ZipFile(dev_package / "layer-deployment.zip") as archive:
        archive.extractall(layer)
    site = layer / LAYER_SITE_PACKAGES
    # As on Lambda: /var/task (the function zip), then the layer's site-packages under /opt, and the function's
    # own environment (none of the tests' TALLY_* settings); boto3 and moto come from the test environment.
    function = resources(dev_package)["aws_lambda_function"]["map_object"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")},
           **function["environment"]["variables"], "AWS_LAMBDA_FUNCTION_NAME": function["function_name"],
           "PYTHONPATH": f"{extracted}{os.pathsep}{site}", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    result = subprocess.run([sys.executable, "-c", PACKAGED_HANDLER, str(extracted), str(site)], cwd=extracted,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        ["uservisits/a b.csv", "mapped"], ["uservisits/c.csv", "mapped"]]
