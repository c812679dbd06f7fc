"""`chalice package --pkg-format terraform`, offline from the wheelhouse `make test` prepares: the package
declares the S3 subscription, the schedules and the API, puts the dependencies and the job definitions in a
shared layer (`automatic_layer`) beside a small function zip, stays inside Lambda's size limit, and its
handler maps every record of an S3 event when run from the extracted function zip and layer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code and all its layers, unzipped
LAYER_SITE_PACKAGES = "python/lib/python3.11/site-packages"  # where Lambda finds a layer's modules (/opt/...)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    assert (WHEELHOUSE / ".complete").exists(), "no wheelhouse: run `make test`, which downloads it first"
    out = tmp_path_factory.mktemp("terraform")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE), "AWS_DEFAULT_REGION": "us-east-1"}
    chalice = Path(sys.executable).with_name("chalice")
    result = subprocess.run([str(chalice), "package", "--pkg-format", "terraform", "--stage", "dev", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Could not install dependencies" not in result.stdout + result.stderr, result.stdout + result.stderr
    return out


def resources(package: Path) -> dict:
    return json.loads((package / "chalice.tf.json").read_text())["resource"]


def test_terraform_declares_mapper_subscription_schedule_and_api(package):
    declared = resources(package)
    functions = declared["aws_lambda_function"]
    assert {"map_object", "map_range", "reduce_results", "api_handler"} <= set(functions)
    # Large objects' ranges run in their own function, invoked asynchronously by map_object.
    assert functions["map_range"]["memory_size"] == 1769 and functions["map_range"]["timeout"] == 900
    assert functions["map_object"]["memory_size"] == 1769 and functions["map_object"]["timeout"] == 900
    environment = functions["map_object"]["environment"]["variables"]
    assert environment["TALLY_INPUT_BUCKET"] == "tally-input-dev"
    assert environment["TALLY_STATE_BUCKET"] == "tally-state-dev"

    [notification] = declared["aws_s3_bucket_notification"].values()
    assert notification["bucket"] == "tally-input-dev"
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
                            "/jobs/{job}/status"}
    # TALLY_API_AUTH=iam in the stage: the data needs SigV4; the page and the API description are public.
    assert all(spec["security"] == [{"sigv4": []}] for path, spec in methods.items() if path.startswith("/jobs"))
    assert "security" not in methods["/"] and "security" not in methods["/openapi.json"]


def test_every_function_runs_on_the_shared_dependency_layer(package):
    declared = resources(package)
    [(name, layer)] = declared["aws_lambda_layer_version"].items()
    assert layer["compatible_runtimes"] == ["python3.11"] and layer["filename"].endswith("layer-deployment.zip")
    for function in declared["aws_lambda_function"].values():
        assert function["layers"] == [f"${{aws_lambda_layer_version.{name}.arn}}"]
        assert function["filename"].endswith("/deployment.zip")


def test_each_function_has_its_own_role_with_its_own_committed_policy(package):
    declared = resources(package)
    for handler, function in declared["aws_lambda_function"].items():
        role = function["role"].removeprefix("${aws_iam_role.").removesuffix(".arn}")
        policy = declared["aws_iam_role_policy"][role]["policy"]
        assert role == f"{handler}_role" and declared["aws_iam_role_policy"][role]["role"].startswith(
            f"${{aws_iam_role.{role}.")
        assert json.loads(policy) == json.loads((ROOT / ".chalice" / f"policy-dev-{handler}.json").read_text())
    api = json.loads(declared["aws_iam_role_policy"]["api_handler_role"]["policy"])
    actions = {a for statement in api["Statement"] for a in statement["Action"]}
    assert not actions & {"s3:PutObject", "s3:DeleteObject", "lambda:InvokeFunction"}


def contents(archive_path: Path) -> tuple[set[str], int]:
    with zipfile.ZipFile(archive_path) as archive:
        return set(archive.namelist()), sum(info.file_size for info in archive.infolist())


def test_zips_ship_the_engine_the_jobs_and_the_dependencies_within_lambda_limits(package):
    code, code_unzipped = contents(package / "deployment.zip")
    layer, layer_unzipped = contents(package / "layer-deployment.zip")
    assert {"app.py", "chalicelib/engine/mapper.py", "chalicelib/dashboard.html"} <= code
    assert not any(name.startswith(("pyarrow/", "pydantic_core/")) for name in code)  # in the layer
    site = LAYER_SITE_PACKAGES + "/"
    assert {site + "reducers/bdb_agg_2a.py", site + "reducers/page_latency.py"} <= layer
    for dependency in ("pyarrow", "pydantic_core", "aws_lambda_powertools", "simplejson"):
        assert any(name.startswith(f"{site}{dependency}/") for name in layer), dependency
    total = code_unzipped + layer_unzipped
    print(f"\ndeployment.zip: {(package / 'deployment.zip').stat().st_size / 2**20:.2f} MiB zipped, "
          f"{code_unzipped / 2**20:.2f} MiB unzipped; layer-deployment.zip: "
          f"{(package / 'layer-deployment.zip').stat().st_size / 2**20:.1f} MiB zipped, "
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


def test_packaged_handler_maps_every_record_of_an_s3_event(package, tmp_path):
    extracted, layer = tmp_path / "task", tmp_path / "opt"
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        archive.extractall(extracted)
    with zipfile.ZipFile(package / "layer-deployment.zip") as archive:
        archive.extractall(layer)
    site = layer / LAYER_SITE_PACKAGES
    # As on Lambda: /var/task (the function zip), then the layer's site-packages under /opt; boto3 and moto
    # come from the test environment.
    env = {**os.environ, "PYTHONPATH": f"{extracted}{os.pathsep}{site}", "TALLY_INPUT_BUCKET": "tally-input-dev",
           "TALLY_STATE_BUCKET": "tally-state-dev", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    result = subprocess.run([sys.executable, "-c", PACKAGED_HANDLER, str(extracted), str(site)], cwd=extracted,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        ["uservisits/a b.csv", "mapped"], ["uservisits/c.csv", "mapped"]]
