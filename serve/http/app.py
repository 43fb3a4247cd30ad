"""The SageMaker contract: /ping, /invocations, /execution-parameters (and OpenAI's audio API, ``openai_api``).

``create_app()`` is the gunicorn entry point (``serve.http.app:create_app()``),
called once in each worker after the fork: it starts that worker's model
loading in the background (``core.runtime.Runtime``) and returns at once.

An /invocations request: the body goes to a scratch folder (``inputs``), the
runtime resolves its options and hands it to the scheduler, and the answer is
rendered in the format the Accept header asks for (``formats``), whole or
streamed segment by segment (``jobs``, shared with the OpenAI routes). Errors
are JSON (``errors``). Every request, whatever its outcome, writes one JSON
line to stdout (``serve.events``) and returns its id in ``X-Request-Id``:
SageMaker's inference id when the caller set one, else one made here.
``GET /metrics`` answers Prometheus (``serve.metrics``).

With WHISPER_API_KEY set, every route but /ping needs ``Authorization:
Bearer <key>`` (``require_api_key``), checked before anything else is read.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from flask import Flask, Response, g, request
from werkzeug.exceptions import Unauthorized

from .. import metrics
from ..backends import load_backend
from ..core.runtime import Runtime
from ..diarization import known
from ..settings import Settings
from . import live, openai_api
from .errors import error_response
from .formats import SSE_MARKER, StreamWriter, stream_writer, writer_for_accept
from .inputs import Invocation, Limits, ScratchRequest, read_invocation
from .jobs import Transcribing, log_failure

log = logging.getLogger(__name__)

MAX_PAYLOAD_MB = 100
"""SageMaker's ceiling for MaxConcurrentTransforms x MaxPayloadInMB in a transform job."""
UNHEALTHY_EXIT_S = 5.0
"""A worker whose engine can no longer serve answers 503 this long, then exits; gunicorn starts a new one."""


def create_app(settings: Optional[Settings] = None, runtime: Optional[Runtime] = None) -> Flask:
    settings = settings or Settings.from_env()
    # This worker's own scratch folder: the master empties it if the worker dies (gunicorn_conf.child_exit).
    settings = replace(settings, scratch_dir=worker_scratch(settings.scratch_dir, os.getpid()))
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging(settings)
    serving: list[Runtime] = []  # the metrics start first, so that the model's load and warm-up are counted
    served = _start_metrics(settings, lambda: serving[0] if serving else None)
    runtime = runtime or Runtime(settings, load_backend, on_unhealthy=_exit_later).start()
    serving.append(runtime)
    limits = Limits.of(settings)

    app = Flask("serve")
    app.request_class = ScratchRequest
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes  # multipart parsing honours it; raw and JSON are counted
    # a form's text fields (Flask: 500 kB): known speakers' reference clips come as data URLs in them
    app.config["MAX_FORM_MEMORY_SIZE"] = known.MAX_FORM_CHARS
    app.extensions["whisper.runtime"] = runtime

    @app.before_request
    def _assign_request_id():
        g.request_id = request_id(request.headers.get(INFERENCE_ID_HEADER))
        g.started = time.monotonic()

    if settings.api_key:
        app.before_request(require_api_key(settings.api_key))

    @app.after_request
    def _add_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.get("/ping")
    def ping():
        try:
            runtime.require_ready()  # loaded, warmed up, and the engine still serves
        except Exception as exc:  # noqa: BLE001 - the reason, as JSON
            return error_response(exc)
        return Response(status=200, mimetype="text/plain")  # empty; Flask's default label is text/html

    @app.get("/metrics")
    def prometheus_metrics():
        # Needs the API key when one is set (require_api_key): the figures tell traffic and models
        if served is None:
            return Response("metrics are off (WHISPER_METRICS=off)\n", status=404, mimetype="text/plain")
        return Response(served.render(), status=200, content_type=served.content_type)

    @app.get("/execution-parameters")
    def execution_parameters():
        # As many records as the workers' batches hold
        return transform_parameters(settings.worker_count() * runtime.concurrency)

    @app.post("/invocations")
    def invocations():
        record: dict = {"event": "invocation", "route": "/invocations", "request_id": g.request_id,
                        "content_type": request.mimetype or None, "accept": request.headers.get("Accept")}
        try:
            return _invoke(settings, runtime, limits, record)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer; the worker lives on
            return log_failure(record, exc, error_response(exc))

    app.register_blueprint(openai_api.blueprint(settings, runtime))  # bodies capped by MAX_CONTENT_LENGTH
    live.register(app, settings, runtime)  # the WebSocket routes: live sessions

    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        if request.path.startswith("/v1/"):  # unknown /v1 routes and methods too: OpenAI's error shape
            return openai_api.error_response(exc)
        return error_response(exc)

    return app


INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
"""What SageMaker forwards when the caller set InvokeEndpoint's InferenceId (1 to 64 characters)."""
INFERENCE_ID = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,63}")


def request_id(inference_id: Optional[str]) -> str:
    """SageMaker's inference id when the caller set one (so client and log name the request alike), else ours.

    Only what fits a log line and a header is taken: 1 to 64 printable ASCII characters."""
    if inference_id and INFERENCE_ID.fullmatch(inference_id):
        return inference_id
    return uuid.uuid4().hex


def _start_metrics(settings: Settings, runtime: Callable[[], Optional[Runtime]]) -> Optional[metrics.Metrics]:
    """This worker's outlets (WHISPER_METRICS); their dimensions name the model once it is loaded."""
    if not settings.metrics:
        metrics.off()
        return None

    def loaded():
        served = runtime()
        return served.backend if served is not None and getattr(served, "ready", False) else None

    def served_by() -> Optional[tuple[str, str]]:
        backend = loaded()
        return None if backend is None else (backend.name, backend.model_name)

    def gpu_memory() -> Optional[int]:
        backend = loaded()
        return metrics.gpu_memory_used() if backend is not None and backend.device.kind == "cuda" else None

    config = metrics.MetricsConfig(settings.metrics_namespace, settings.metrics_interval_s,
                                   settings.metrics_endpoint, settings.metrics_variant)
    return metrics.start(config, served_by, gpu_memory)


def _exit_later(reason: str) -> None:
    """The engine can no longer serve (a device error, a hung call...): only a new process can.

    The worker answers 503 (requests and /ping) for ``UNHEALTHY_EXIT_S``, then
    exits at once (a hung engine call would block a graceful exit); gunicorn's
    master starts a new worker, which loads the model again.
    """
    def leave() -> None:
        log.critical("worker %d exits: %s", os.getpid(), reason)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(UNHEALTHY_EXIT_S, leave)
    timer.daemon = True
    timer.start()


def transform_parameters(records: int) -> dict:
    """What a transform job should send: ``records`` at once if SageMaker allows it. It wants
    MaxConcurrentTransforms x MaxPayloadInMB <= 100, and at least 1 MB a record: beyond 100
    records, 100 of 1 MB."""
    payload_mb = max(1, MAX_PAYLOAD_MB // max(1, records))
    return {
        "MaxConcurrentTransforms": max(1, min(records, MAX_PAYLOAD_MB // payload_mb)),
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": payload_mb,
    }


def require_api_key(key: str) -> Callable[[], Optional[Response]]:
    """A ``before_request`` hook: every route but /ping needs ``Authorization: Bearer <key>``, else a 401
    (OpenAI's error shape on /v1). Compared in constant time; the key is never logged or echoed."""
    expected = key.encode()

    def check() -> Optional[Response]:
        if request.path == "/ping":  # SageMaker's health check and load balancers send no key
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        reason = ("the API key is wrong" if scheme.lower() == "bearer" and given.strip()
                  else "this server needs an API key")
        exc = Unauthorized(f"{reason}: send Authorization: Bearer <key>, the key the server was started with "
                           "(WHISPER_API_KEY)")
        answer = openai_api.error_response(exc) if request.path.startswith("/v1/") else error_response(exc)
        answer.headers["WWW-Authenticate"] = "Bearer"
        log.info("request %s to %s refused: %s", g.request_id, request.path, reason)
        return answer

    return check


def worker_scratch(root: Path, pid: int) -> Path:
    return root / f"worker-{pid}"


def _invoke(settings: Settings, runtime: Runtime, limits: Limits, record: dict) -> Response:
    """Parse, transcribe, render. Raises on a failure before the answer starts (mapped by the caller)."""
    writer = writer_for_accept(request.headers.get("Accept"))  # 406 before reading a large body
    streams: list[StreamWriter] = []

    def read(scratch: Path) -> Invocation:
        invocation = read_invocation(request, scratch, limits)
        if invocation.stream or writer is SSE_MARKER:
            streams.append(stream_writer(writer))  # 406 for a format that cannot stream, before any work
            return replace(invocation, stream=True)
        return invocation

    transcribing = Transcribing.start(settings, runtime, record, read)
    if streams:
        return transcribing.stream(streams[0])
    result, extra = transcribing.result()
    return Response(writer.render(result, extra), status=200, content_type=writer.content_type)


def _configure_logging(settings: Settings) -> None:
    """Outside gunicorn (tests, local runs) log to stdout; under gunicorn its logconfig_dict already did."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stdout, level=settings.log_level.upper(),
                            format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")


__all__ = ["create_app", "Invocation"]
