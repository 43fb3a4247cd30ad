"""The real serving container (``container/serve``: nginx, gunicorn, Flask) for tests.

``running_server(backend)`` starts it with ``localmodes.server.ServerProcess``
(the one way this project starts a server) on 127.0.0.1, serving the embedded
tiny.en (an empty model directory) from a scratch folder of its own, and
waits until ``/ping`` says 200. On exit it sends SIGTERM, as SageMaker does,
and asserts the server is gone within the 30 s SageMaker allows.

Tests share one server per backend (the ``server`` fixture, at the end): each
start-up loads a model and runs a warm-up, which is most of the cost of the
server tests.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import psutil
import pytest

from localmodes.server import ServerProcess, free_port
from serve.backends import BACKEND_MODULES

ROOT = Path(__file__).resolve().parents[1]
MODEL_CACHE = ROOT / ".cache" / "models"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

__all__ = ["ServerHandle", "free_port", "running_server", "MODEL_CACHE"]


@dataclass
class ServerHandle:
    server: ServerProcess
    tmp_dir: Path
    """WHISPER_TMP_DIR of the server: no request file may stay there once a request ends."""
    backend: str = ""

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:51234`` (no trailing slash)."""
        return self.server.url

    @property
    def process(self):
        return self.server.process

    def log(self) -> str:
        return self.server.log()

    def log_tail(self, lines: int = 60) -> str:
        return self.server.log_tail(lines)

    def workers(self) -> set[int]:
        """Pids of the gunicorn workers (the processes that hold a model)."""
        root = psutil.Process(self.server.process.pid)
        masters = [p for p in root.children() if "gunicorn" in " ".join(p.cmdline())]
        return {w.pid for m in masters for w in m.children()}

    def request_files(self) -> list[str]:
        """What requests left in the scratch folder (nginx's own folder there holds only its config and socket;
        ``metrics/`` holds the workers' Prometheus files, one set a worker, not a request's)."""
        front = self.tmp_dir / "front"
        metrics = self.tmp_dir / "metrics"
        found = []
        for path in self.tmp_dir.rglob("*"):
            if path.is_file() and not (path.parent == front and path.name in ("nginx.conf", "nginx.pid",
                                                                              "gunicorn.sock")) \
                    and not (path.parent == metrics and path.suffix == ".db"):
                found.append(str(path.relative_to(self.tmp_dir)))
        return sorted(found)


def server_env(backend: str, model_dir: Path, tmp_dir: Path, extra: Optional[dict] = None) -> dict:
    """The environment of a test server: loopback only, CPU, nothing from a model hub."""
    env = {
        "WHISPER_BACKEND": backend,
        "WHISPER_MODEL_DIR": str(model_dir),
        "WHISPER_CACHE_DIR": str(MODEL_CACHE),
        "WHISPER_TMP_DIR": str(tmp_dir),
        "WHISPER_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_server(backend: str = "ctranslate2", env: Optional[dict] = None, port: Optional[int] = None,
                   wait: bool = True) -> Iterator[ServerHandle]:
    """Run ``container/serve`` on 127.0.0.1 for the duration of the block.

    ``env`` overrides or adds variables (e.g. ``WHISPER_MODEL_DIR`` for a real
    artifact). ``wait=False`` yields as soon as the process is started (to
    watch /ping say 503 while loading).
    """
    with tempfile.TemporaryDirectory(prefix="whisper-server-") as scratch:
        os.chmod(scratch, 0o711)  # run as root, serve gives nginx's workers www-data: let it through to WHISPER_TMP_DIR
        scratch_path = Path(scratch)
        model_dir = scratch_path / "model"  # empty: the embedded default is served
        tmp_dir = scratch_path / "tmp"
        model_dir.mkdir()
        log_path = Path(tempfile.gettempdir()) / f"whisper-server-{backend}-{os.getpid()}-{scratch_path.name}.log"
        server = ServerProcess(server_env(backend, model_dir, tmp_dir, env), port, log_path)
        handle = ServerHandle(server, tmp_dir, backend)
        server.start()
        try:
            if wait:
                server.wait_ready(START_TIMEOUT_S)
            yield handle
            seconds = server.stop(STOP_TIMEOUT_S)
            assert seconds < STOP_TIMEOUT_S
        finally:
            if server.process.poll() is None:  # an exception above: don't leave a server behind
                server.kill()


def stop(handle: ServerHandle) -> float:
    """SIGTERM, as SageMaker sends it; seconds until the server exited."""
    return handle.server.stop(STOP_TIMEOUT_S)


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
        "WHISPER_S3_ALLOW": f"s3://{S3_BUCKET}/inputs",  # what the tests' s3_uri may name
    }
    s3_client(env)  # makes the bucket
    yield env
    moto.stop()


def s3_client(env: dict):
    """A client of the session's moto S3, its bucket there (moto's state is one per process: a test that
    resets the ``aws`` fixture's moto empties this one too)."""
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    if S3_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=S3_BUCKET)
    return client


@pytest.fixture(scope="session", params=BACKEND_NAMES)
def server(request, s3_env) -> Iterator[ServerHandle]:
    """The real server on the embedded tiny.en, one per backend, reading S3 from the local moto.

    On teardown: no request may have left a file behind, and SIGTERM must stop
    the server within 30 s.
    """
    with running_server(request.param, env=s3_env) as handle:
        yield handle
        leftovers = handle.request_files()
        assert not leftovers, f"{handle.backend} server left request files behind: {leftovers}"
