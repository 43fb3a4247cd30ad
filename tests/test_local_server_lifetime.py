"""Local servers: on the port asked for, and never outliving what started them.

- ``local_test/serve_local.sh`` listens on SAGEMAKER_BIND_TO_PORT when it is
  set (it used to overwrite it with PORT, default 8080); PORT alone still works.
- The local async service's ``--start-server`` server dies with the service,
  even when the service is killed with SIGKILL (it used to be orphaned).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.server_harness import MODEL_CACHE, START_TIMEOUT_S, free_port

ROOT = Path(__file__).resolve().parents[1]
DRAIN_S = 35  # SIGTERM to exit: the server's drain (29 s at most) and a margin


def local_env(tmp_path: Path, **extra: str) -> dict:
    """This environment, on the CPU, offline, with a scratch folder of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "SAGEMAKER_")) and k != "PORT"}
    # pytest's tmp_path is under a 0700 folder: run as root, nginx's workers (www-data) could not reach it
    scratch = Path(tempfile.mkdtemp(prefix=f"whisper-{tmp_path.name}-"))
    scratch.chmod(0o711)
    env.update(WHISPER_TMP_DIR=str(scratch / "scratch"), WHISPER_CACHE_DIR=str(MODEL_CACHE), WHISPER_DEVICE="cpu",
               WHISPER_BACKEND="ctranslate2", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.update(extra)
    return env


def wait_for(url: str, process: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(url)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("ports", ["SAGEMAKER_BIND_TO_PORT and PORT", "PORT alone"])
def test_serve_local_listens_on_the_port_asked_for(tmp_path, ports):
    bind, port = free_port(), free_port()
    extra = {"NO_DOCKER": "1", "PORT": str(port)}
    if ports.startswith("SAGEMAKER"):
        extra["SAGEMAKER_BIND_TO_PORT"] = str(bind)
    expected, other = (bind, port) if "SAGEMAKER_BIND_TO_PORT" in extra else (port, bind)
    log = tmp_path / "serve_local.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(ROOT / "local_test" / "serve_local.sh")], cwd=ROOT,
                                   env=local_env(tmp_path, **extra), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{expected}/ping", process)
        assert not listening(other)
        if ports.startswith("SAGEMAKER"):
            assert f"PORT={port} is ignored" in log.read_text()
        process.send_signal(signal.SIGTERM)  # the script exec'd container/serve: this is the server
        assert process.wait(DRAIN_S) == 0
        assert not (tmp_path / "scratch").exists(), "the server left its scratch folder"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_async_service_killed_takes_its_server_with_it(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "localmodes.async_endpoint", "serve", "--start-server", "--backend", "ctranslate2",
               "--port", str(port), "--db", str(tmp_path / "queue.sqlite"), "--output", str(tmp_path / "out"),
               "--failure", str(tmp_path / "fail")]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with open(tmp_path / "async.log", "wb") as out:
        service = subprocess.Popen(command, cwd=ROOT, env=local_env(tmp_path, WHISPER_MODEL_DIR=str(model_dir)),
                                   stdout=out, stderr=subprocess.STDOUT)
    descendants: list[psutil.Process] = []
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", service)  # up once its server answers /ping
        descendants = psutil.Process(service.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "container/serve" in names and "gunicorn" in names and "nginx" in names, names

        service.send_signal(signal.SIGKILL)  # a crash: no chance to stop its server
        service.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=DRAIN_S)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        if service.poll() is None:
            service.kill()
        for p in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
