"""The SageMaker HTTP contract: /ping, /invocations, /execution-parameters.

``create_app()`` is the gunicorn entry point (``serve.app:create_app()``),
called once in each worker after the fork: it starts that worker's model
loading in the background (``worker.ModelWorker``) and returns at once.

Errors are JSON ``{"error": {"type": ..., "message": ...}}`` with the status
of the ``WhisperServeError`` raised; anything unexpected is a 500 carrying a
request id that is also logged with the traceback. Every /invocations
request, whatever its outcome, writes one JSON line to stdout
(``serve.events``) and returns its id in ``X-Request-Id``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from typing import Optional

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from .errors import WhisperServeError
from .formats import writer_for_accept
from .inputs import ScratchDir, ScratchRequest, read_invocation
from .settings import Settings
from .worker import ModelWorker

log = logging.getLogger(__name__)
events = logging.getLogger("serve.events")

MAX_PAYLOAD_MB = 100
"""MaxPayloadInMB for batch transform: SageMaker's own ceiling for a record."""


def create_app(settings: Optional[Settings] = None, worker: Optional[ModelWorker] = None) -> Flask:
    settings = settings or Settings.from_env()
    _configure_logging(settings)
    worker = worker or ModelWorker(settings).start()
    cap = int(settings.max_body_mb * 1e6) or None

    app = Flask("serve")
    app.request_class = ScratchRequest
    app.config["MAX_CONTENT_LENGTH"] = cap  # multipart parsing honours it; raw and JSON bodies are counted
    app.extensions["whisper.worker"] = worker

    @app.before_request
    def _assign_request_id():
        g.request_id = uuid.uuid4().hex
        g.started = time.monotonic()

    @app.after_request
    def _add_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.get("/ping")
    def ping():
        if worker.ready:
            return Response(status=200)
        try:
            worker.require_ready()
        except WhisperServeError as exc:
            return error_response(exc)
        return error_response(RuntimeError("unreachable"))  # pragma: no cover

    @app.get("/execution-parameters")
    def execution_parameters():
        workers = int(os.environ.get("WHISPER_SERVER_WORKERS") or 1)
        return {
            "MaxConcurrentTransforms": workers * worker.concurrency,
            "BatchStrategy": "SINGLE_RECORD",
            "MaxPayloadInMB": MAX_PAYLOAD_MB,
        }

    @app.post("/invocations")
    def invocations():
        record: dict = {"event": "invocation", "request_id": g.request_id,
                        "content_type": request.mimetype or None, "accept": request.headers.get("Accept")}
        try:
            response = _invoke(settings, worker, cap, record)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer; the worker lives on
            response = error_response(exc)
            record["error_type"] = _error_type(exc)
        record["status"] = response.status_code
        record["total_seconds"] = round(time.monotonic() - g.started, 3)
        events.info(json.dumps(record))
        return response

    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        return error_response(exc)

    return app


def _invoke(settings: Settings, worker: ModelWorker, cap: Optional[int], record: dict) -> Response:
    """Parse, transcribe, render. Raises on any failure (mapped by the caller)."""
    writer = writer_for_accept(request.headers.get("Accept"))  # 406 before reading a large body
    backend = worker.require_ready()
    with ScratchDir(settings.tmp_dir) as scratch:
        invocation = read_invocation(request, scratch.path, cap)
        record.update(input=invocation.kind, body_bytes=invocation.body_bytes)
        # Reject an option this backend cannot honour before waiting in the queue.
        backend.check(invocation.options.merged_over(settings.defaults))
        remaining = settings.timeout - (time.monotonic() - g.started)
        result = worker.transcribe(invocation.path, invocation.options, timeout=max(remaining, 1.0))
    t = result.transcription
    processing = round(result.processing_seconds, 3)
    record.update(audio_seconds=round(t.duration, 3), processing_seconds=processing,
                  queued_seconds=round(result.queued_seconds, 3),
                  rtf=round(processing / t.duration, 4) if t.duration else None,
                  backend=backend.name, model=backend.model_name)
    extra = {"backend": backend.name, "model": backend.model_name, "processing_seconds": processing}
    return Response(writer.render(t, extra), status=200, content_type=writer.content_type)


def error_response(exc: BaseException) -> Response:
    if isinstance(exc, WhisperServeError):
        status, error_type, message = exc.status_code, exc.error_type, exc.message
    elif isinstance(exc, HTTPException):
        status, error_type, message = exc.code or 500, _error_type(exc), exc.description or exc.name
    else:
        request_id = g.get("request_id", "-")
        log.error("request %s failed: %s", request_id, exc, exc_info=exc)
        status, error_type = 500, "InternalError"
        message = f"internal error, request id {request_id}: search the endpoint's logs for it"
    body = json.dumps({"error": {"type": error_type, "message": message}}, ensure_ascii=False)
    return Response(body, status=status, content_type="application/json")


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, WhisperServeError):
        return exc.error_type
    if isinstance(exc, HTTPException):
        return (exc.name or "HTTPError").replace(" ", "")
    return "InternalError"


def _configure_logging(settings: Settings) -> None:
    """Outside gunicorn (tests, local runs) log to stdout; under gunicorn its logconfig_dict already did."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stdout, level=settings.log_level.upper(),
                            format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
