"""Talking to the container server the way SageMaker does, and starting one locally.

Both offline modes only ever use the container contract -- ``GET /ping``,
``GET /execution-parameters``, ``POST /invocations`` -- so they work against
the real container (started here with ``container/serve``), one started some
other way, or a stand-in in unit tests.
"""

from __future__ import annotations

import argparse
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
from typing import ContextManager, Iterator, Mapping, Optional

import requests

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "container" / "serve"

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


@dataclass(frozen=True)
class ExecutionParameters:
    """What ``GET /execution-parameters`` tells a transform job.

    SageMaker falls back to its own defaults when the container does not
    answer; we do the same (1 transform at a time, 6 MB payloads).
    """

    max_concurrent_transforms: int = 1
    batch_strategy: str = "SINGLE_RECORD"
    max_payload_mb: int = 6

    @classmethod
    def from_json(cls, body: Mapping) -> "ExecutionParameters":
        return cls(int(body.get("MaxConcurrentTransforms", 1)),
                   str(body.get("BatchStrategy", "SINGLE_RECORD")),
                   int(body.get("MaxPayloadInMB", 6)))


class Container:
    """An HTTP client for one container server (thread-safe: a session per call site)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def wait_until_healthy(self, timeout: float, process: Optional[subprocess.Popen] = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode} before /ping was healthy")
            time.sleep(0.5)
        raise TimeoutError(f"{self.url}/ping was not healthy within {timeout:.0f} s")

    def execution_parameters(self) -> Optional[ExecutionParameters]:
        """The container's answer, or None when it has no such route (SageMaker then uses its defaults)."""
        response = requests.get(f"{self.url}/execution-parameters", timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return ExecutionParameters.from_json(response.json())

    def invoke(self, session: requests.Session, path: Path, content_type: str, accept: str,
               custom_attributes: Optional[str], timeout: float) -> requests.Response:
        """POST one file as the raw body, streamed from disk, as SageMaker sends an object."""
        headers = {"Content-Type": content_type, "Accept": accept}
        if custom_attributes:
            headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        with open(path, "rb") as body:
            return session.post(f"{self.url}/invocations", data=body, headers=headers, timeout=timeout)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """``--endpoint URL | --start-server`` (one required) and ``--backend``, as every mode takes them."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="URL of a running container server, e.g. http://127.0.0.1:8080")
    target.add_argument("--start-server", action="store_true",
                        help="start container/serve on 127.0.0.1 for as long as this command runs")
    parser.add_argument("--backend", help="WHISPER_BACKEND for --start-server (openai, transformers, ctranslate2)")


def server_from_args(args: argparse.Namespace) -> ContextManager[str]:
    """A context manager yielding the server's URL: started here, or the given ``--endpoint``."""
    return started_server(args.backend) if args.start_server else contextlib.nullcontext(args.endpoint)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started_server(backend: Optional[str] = None, port: Optional[int] = None,
                   env: Optional[Mapping[str, str]] = None, timeout: float = 600.0) -> Iterator[str]:
    """Run ``container/serve`` on 127.0.0.1 until the block ends; yields its URL.

    For users without a server of their own running: the batch and async
    commands' ``--start-server``. The server log goes to a temporary file
    whose path is printed if the server fails to come up.
    """
    port = port or free_port()
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["SAGEMAKER_BIND_TO_PORT"] = str(port)
    child_env.setdefault("WHISPER_BIND_HOST", "127.0.0.1")  # a local trial is not a public service
    # container/serve execs gunicorn: find this interpreter's, even in a venv that isn't activated
    child_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + child_env.get("PATH", "")
    if backend:
        child_env["WHISPER_BACKEND"] = backend
    log = tempfile.NamedTemporaryFile(prefix="whisper-serve-", suffix=".log", delete=False)
    process = subprocess.Popen([str(SERVE)], cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            Container(url).wait_until_healthy(timeout, process)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; see the server log {log.name}") from None
        print(f"server ready at {url} (log: {log.name})", file=sys.stderr)
        yield url
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (gunicorn and its workers), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
