"""Shared helpers for the AWS tests: moto environment and reset, the deploy CLI runner, clients.

The moto server itself and the ``aws`` fixture (a clean account per test) are in
tests/conftest.py, so every module shares one server on 127.0.0.1; clients find it
through AWS_ENDPOINT_URL, exactly as the CLI does in production.
"""

from __future__ import annotations

import json
import urllib.request

import boto3

from deploy.aws import Executor
from deploy.cli import main

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerWhisper"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/whisper:v1"
# moto only knows older instance types; users get ml.g5.xlarge by default.
TEST_INSTANCE = "ml.m5.xlarge"


def moto_environment(url: str, scratch) -> dict[str, str]:
    """The variables that send boto3 (here and in subprocesses) to moto, and keep any real ~/.aws out."""
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": str(scratch / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "no-aws-credentials")}


def reset_moto(url: str) -> None:
    """A clean account: moto forgets every resource."""
    _post(f"{url}/moto-api/reset", {})


def _post(url: str, payload: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1 only
        response.read()


def queue_realtime_results(server: str, *bodies: str) -> None:
    """What moto's InvokeEndpoint answers next (it never runs the container)."""
    results = [{"Body": b, "ContentType": "text/plain", "InvokedProductionVariant": "AllTraffic",
                "CustomAttributes": ""} for b in bodies]
    _post(f"{server}/moto-api/static/sagemaker/endpoint-results", {"results": results})


def queue_async_results(server: str, *results: tuple[bool, str]) -> None:
    """(is_failure, data) pairs moto writes to the Output/FailureLocation of InvokeEndpointAsync."""
    _post(f"{server}/moto-api/static/sagemaker/async-endpoint-results",
          {"results": [{"is_failure": f, "data": d} for f, d in results]})


def client(service: str):
    return boto3.client(service, region_name=REGION)


def cli(capsys, *argv: str, executor: Executor | None = None) -> tuple[int, str, str]:
    """Run whisper-deploy in-process with instant waits; return (rc, stdout, stderr)."""
    capsys.readouterr()
    ex = executor or Executor(region=REGION, dry_run="--dry-run" in argv, sleep=lambda s: None)
    rc = main(list(argv), executor=ex)
    out, err = capsys.readouterr()
    return rc, out, err


def dry_run(capsys, *argv: str) -> list[dict]:
    """The JSON request lines a --dry-run prints (asserting it succeeded)."""
    rc, out, err = cli(capsys, "--dry-run", *argv)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def make_bucket(name: str) -> None:
    client("s3").create_bucket(Bucket=name)
