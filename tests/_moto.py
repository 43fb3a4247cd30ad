"""Shared helpers for the deploy tests: one local moto server, reset per test.

Fixtures live here and are imported by each test module (``from tests._moto import
aws``) because tests/conftest.py belongs to the suite as a whole. The server binds
127.0.0.1 only; every client finds it through AWS_ENDPOINT_URL, exactly as the
CLI does in production.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from deploy.aws import Executor
from deploy.cli import main

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerWhisper"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/whisper:v1"
# moto only knows older instance types; users get ml.g5.xlarge by default.
TEST_INSTANCE = "ml.m5.xlarge"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """A clean moto account; the environment points boto3 (and subprocesses) at it."""
    _post(f"{moto_server}/moto-api/reset", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_server


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
