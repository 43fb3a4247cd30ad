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


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started us dies (even by SIGKILL)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """``container/serve`` as a child process on 127.0.0.1: the exact command SageMaker runs.

    The one way this project starts a local server (the batch and async
    commands' ``--start-server``, the tests, the benchmarks). It runs in its
    own process group and, unless told otherwise, dies with its parent: a
    crashed or killed caller leaves no server behind.
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None, port: Optional[int] = None,
                 log_path: Optional[Path] = None, die_with_parent: bool = True):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env["SAGEMAKER_BIND_TO_PORT"] = str(self.port)
        self.env.setdefault("WHISPER_BIND_HOST", "127.0.0.1")  # a local trial is not a public service
        # container/serve runs gunicorn with this interpreter: its venv's packages, even when not activated
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        if log_path is None:
            log_path = Path(tempfile.NamedTemporaryFile(prefix="whisper-serve-", suffix=".log", delete=False).name)
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "ServerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(SERVE)], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent if self.die_with_parent else None)
        return self

    def wait_ready(self, timeout: float = 600.0) -> None:
        try:
            Container(self.url).wait_until_healthy(timeout, self.process)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; the server log ({self.log_path}) ends with:\n{self.log_tail()}") from None

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, as SageMaker sends it; seconds until the whole server exited (SIGKILL past ``timeout``)."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the server did not exit within {timeout:.0f} s of SIGTERM") from None
        return time.monotonic() - start

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn, its workers, nginx)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@contextlib.contextmanager
def started_server(backend: Optional[str] = None, port: Optional[int] = None,
                   env: Optional[Mapping[str, str]] = None, timeout: float = 600.0) -> Iterator[str]:
    """Run ``container/serve`` on 127.0.0.1 until the block ends; yields its URL."""
    server = ServerProcess({**(env or {}), **({"WHISPER_BACKEND": backend} if backend else {})}, port)
    server.start()
    try:
        server.wait_ready(timeout)
        print(f"server ready at {server.url} (log: {server.log_path})", file=sys.stderr)
        yield server.url
    finally:
        try:
            server.stop()
        except TimeoutError:
            pass
