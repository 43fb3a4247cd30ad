"""build_and_push.sh in DRY_RUN mode against moto: the AWS calls are real (STS, ECR
repository created), the docker commands are only shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests._moto import ACCOUNT, REGION, client

SCRIPT = Path(__file__).resolve().parents[2] / "build_and_push.sh"


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def _env(**extra: str) -> dict:
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, **extra)
    env.pop("PYTHONPATH", None)
    return env


def test_dry_run_creates_repository_and_prints_uri(aws):
    expected = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/whisper-sm:v2"
    for attempt in (1, 2):  # the second run finds the repository instead of creating it
        result = _run(["whisper-sm", "v2"], _env())
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, f"attempt {attempt}"
    (repository,) = client("ecr").describe_repositories()["repositories"]
    assert repository["repositoryName"] == "whisper-sm"
    assert f"account {ACCOUNT}, region {REGION}" in result.stderr
    assert "+ docker build --platform linux/amd64 --provenance=false" in result.stderr
    assert f"+ docker tag whisper-sm:v2 {expected}" in result.stderr
    assert f"+ docker push {expected}" in result.stderr


def test_bake_arguments_reach_docker_build(aws):
    result = _run(["whisper-sm"], _env(BAKED_MODEL="large-v3", BAKED_BACKEND="transformers"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("/whisper-sm:latest")
    assert "--build-arg BAKED_MODEL=large-v3 --build-arg BAKED_BACKEND=transformers" in result.stderr


def test_missing_region_is_an_error(aws):
    env = _env(PATH="/usr/bin:/bin")  # no aws CLI to ask either
    env.pop("AWS_REGION")
    env.pop("AWS_DEFAULT_REGION")
    result = _run(["whisper-sm"], env)
    assert result.returncode == 1
    assert "no region" in result.stderr
    assert client("ecr").describe_repositories()["repositories"] == []


def test_invalid_repository_name_stops_before_docker(aws):
    result = _run(["Not_Valid!"], _env())
    assert result.returncode != 0
    assert "ECR repositoryName" in result.stderr
    assert "docker build" not in result.stderr


def test_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage:" in result.stderr
