"""Start the real serving container (``container/serve``: gunicorn + Flask) for tests.

``running_server(backend)`` runs the exact command SageMaker runs, as a
subprocess bound to 127.0.0.1 on a free port, serving the embedded tiny.en
model (an empty model directory), and waits until ``/ping`` says 200. On exit
it sends SIGTERM, as SageMaker does, and asserts the server is gone within the
30 s SageMaker allows.

Tests share one server per backend (the ``server`` fixture, see the end of
this file): each start-up loads a model and runs a warm-up, which is most of
the cost of the server tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests

from serve.backends import BACKEND_MODULES

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "container" / "serve"
MODEL_CACHE = ROOT / ".cache" / "models"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


@dataclass
class ServerHandle:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:51234`` (no trailing slash)."""
    process: subprocess.Popen
    log_path: Path
    """Everything the server wrote to stdout and stderr."""
    tmp_dir: Path
    """WHISPER_TMP_DIR of the server: must be empty whenever no request runs."""
    backend: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(backend: str, port: int, model_dir: Path, tmp_dir: Path, extra: Optional[dict] = None) -> dict:
    """The environment of a test server: this interpreter's venv first on PATH, loopback only, CPU."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.update({
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "WHISPER_BIND_HOST": "127.0.0.1",
        "WHISPER_BACKEND": backend,
        "WHISPER_MODEL_DIR": str(model_dir),
        "WHISPER_CACHE_DIR": str(MODEL_CACHE),
        "WHISPER_TMP_DIR": str(tmp_dir),
        "WHISPER_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before /ping turned 200:\n"
                               + _tail(log_path))
        try:
            r = requests.get(url + "/ping", timeout=2)
            if r.status_code == 200:
                return
            if "failed to load" in r.text:  # permanent: no point waiting
                raise RuntimeError(f"model failed to load: {r.text}\n" + _tail(log_path))
            last = f"{r.status_code} {r.text[:300]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise RuntimeError(f"/ping not 200 after {timeout:.0f} s (last: {last}):\n" + _tail(log_path))


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> float:
    """SIGTERM, as SageMaker sends it; returns seconds until exit (kills and raises past ``timeout``)."""
    if process.poll() is not None:
        return 0.0
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"server did not exit within {timeout:.0f} s of SIGTERM")
    return time.monotonic() - start


@contextlib.contextmanager
def running_server(backend: str = "ctranslate2", env: Optional[dict] = None, port: Optional[int] = None,
                   wait: bool = True) -> Iterator[ServerHandle]:
    """Run ``container/serve`` on 127.0.0.1 for the duration of the block.

    ``env`` overrides or adds variables (e.g. ``WHISPER_MODEL_DIR`` for a real
    artifact, ``SAGEMAKER_MODEL_SERVER_WORKERS``). ``wait=False`` yields as
    soon as the process is started (to watch /ping say 503 while loading).
    """
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="whisper-server-") as scratch:
        scratch_path = Path(scratch)
        model_dir = scratch_path / "model"  # empty: the embedded default is served
        tmp_dir = scratch_path / "tmp"
        model_dir.mkdir()
        tmp_dir.mkdir()
        log_path = scratch_path / "server.log"
        full_env = server_env(backend, port, model_dir, tmp_dir, env)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen([str(SERVE)], cwd=ROOT, env=full_env, stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        handle = ServerHandle(f"http://127.0.0.1:{port}", process, log_path, tmp_dir, backend)
        try:
            if wait:
                wait_ready(handle.url, process, log_path)
            yield handle
            stop(process)
        finally:
            if process.poll() is None:  # an exception above: don't leave a server behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # Copy the log somewhere it survives the scratch dir, for post-mortems.
            with contextlib.suppress(OSError):
                keep = Path(tempfile.gettempdir()) / f"whisper-server-{backend}-{port}.log"
                keep.write_bytes(log_path.read_bytes())


def _tail(log_path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- pytest plugin: one server per backend for the whole session ------------------------------
#
# Registered once as a plugin by tests/conftest.py, so every module shares the same
# servers (importing the fixtures instead would start one server per module).
# ``server`` is parametrized over the backends; a test for one backend only uses
# ``@pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)`` and
# shares the same instance. pytest orders tests so that one server runs at a time.

BACKEND_NAMES = tuple(BACKEND_MODULES)
S3_BUCKET = "whisper-test-audio"


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict]:
    """A moto S3 on 127.0.0.1 with one bucket; the variables that point boto3 (and servers) at it."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    s3_client(env).create_bucket(Bucket=S3_BUCKET)
    yield env
    moto.stop()


def s3_client(env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session", params=BACKEND_NAMES)
def server(request, s3_env) -> Iterator[ServerHandle]:
    """The real server on the embedded tiny.en, one per backend, reading S3 from the local moto.

    On teardown: the temp directory must be empty (no request leaks a file)
    and SIGTERM must stop the server within 30 s.
    """
    with running_server(request.param, env=s3_env) as handle:
        yield handle
        leftovers = sorted(p.name for p in handle.tmp_dir.iterdir())
        assert not leftovers, f"{handle.backend} server left temp files behind: {leftovers}"
