"""The SageMaker contract: /ping, /invocations, /execution-parameters.

``create_app()`` is the gunicorn entry point (``serve.http.app:create_app()``),
called once in each worker after the fork: it starts that worker's model
loading in the background (``core.runtime.Runtime``) and returns at once.

An /invocations request: the body goes to a scratch folder (``inputs``), the
runtime resolves its options and hands it to the scheduler, and the answer is
rendered in the format the Accept header asks for (``formats``), whole or
streamed segment by segment. Errors are JSON (``errors``). Every request,
whatever its outcome, writes one JSON line to stdout (``serve.events``) and
returns its id in ``X-Request-Id``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

from flask import Flask, Response, g, request

from ..core.runtime import Runtime
from ..core.scheduler import Job
from ..errors import CancelledError, RequestTimeoutError
from ..settings import Settings
from .errors import error_response, error_type
from .formats import SSE_MARKER, StreamWriter, stream_writer, writer_for_accept
from .inputs import Invocation, ScratchDir, ScratchRequest, read_invocation

log = logging.getLogger(__name__)
events = logging.getLogger("serve.events")

MAX_PAYLOAD_MB = 100
"""SageMaker's ceiling for MaxConcurrentTransforms x MaxPayloadInMB in a transform job."""


def create_app(settings: Optional[Settings] = None, runtime: Optional[Runtime] = None) -> Flask:
    settings = settings or Settings.from_env()
    # This worker's own scratch folder: the master empties it if the worker dies (gunicorn_conf.child_exit).
    settings = replace(settings, scratch_dir=worker_scratch(settings.scratch_dir, os.getpid()))
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging(settings)
    runtime = runtime or Runtime(settings).start()
    cap = int(settings.max_body_mb * 1e6) or None

    app = Flask("serve")
    app.request_class = ScratchRequest
    app.config["MAX_CONTENT_LENGTH"] = cap  # multipart parsing honours it; raw and JSON bodies are counted
    app.extensions["whisper.runtime"] = runtime

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
        if runtime.ready:
            return Response(status=200)
        try:
            runtime.require_ready()
        except Exception as exc:  # noqa: BLE001 - the reason, as JSON
            return error_response(exc)
        return Response(status=200)  # pragma: no cover - became ready meanwhile

    @app.get("/execution-parameters")
    def execution_parameters():
        # As many records as the workers' batches hold; SageMaker wants concurrency x payload <= 100 MB.
        concurrent = settings.worker_count() * runtime.concurrency
        return {
            "MaxConcurrentTransforms": concurrent,
            "BatchStrategy": "SINGLE_RECORD",
            "MaxPayloadInMB": max(1, MAX_PAYLOAD_MB // concurrent),
        }

    @app.post("/invocations")
    def invocations():
        record: dict = {"event": "invocation", "request_id": g.request_id,
                        "content_type": request.mimetype or None, "accept": request.headers.get("Accept")}
        try:
            return _invoke(settings, runtime, cap, record)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer; the worker lives on
            response = error_response(exc)
            record["error_type"] = error_type(exc)
            _log(record, response.status_code)
            return response

    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        return error_response(exc)

    return app


def worker_scratch(root: Path, pid: int) -> Path:
    return root / f"worker-{pid}"


def _invoke(settings: Settings, runtime: Runtime, cap: Optional[int], record: dict) -> Response:
    """Parse, transcribe, render. Raises on a failure before the answer starts (mapped by the caller)."""
    writer = writer_for_accept(request.headers.get("Accept"))  # 406 before reading a large body
    runtime.require_ready()
    scratch = ScratchDir(settings.scratch_dir)
    try:
        invocation = read_invocation(request, scratch.path, cap)
        record.update(input=invocation.kind, body_bytes=invocation.body_bytes)
        job = runtime.submit(invocation.path, scratch.path, invocation.options)
    except BaseException:
        scratch.close()
        raise
    remaining = settings.timeout - (time.monotonic() - g.started)
    extra = {"backend": runtime.backend.name, "model": runtime.backend.model_name}
    watch = _ClientWatch(request.environ)
    if invocation.stream or writer is SSE_MARKER:
        try:
            stream = stream_writer(writer)
        except BaseException:
            runtime.scheduler.cancel(job)
            scratch.close()
            raise
        return _streamed(runtime, job, stream, scratch, remaining, watch, extra, record)
    try:
        result = _wait(runtime, job, remaining, watch)
    finally:
        scratch.close()
    processing = round(time.monotonic() - job.submitted, 3)
    _record_result(record, job, result, extra)
    _log(record, 200)
    return Response(writer.render(result, {**extra, "processing_seconds": processing}), status=200,
                    content_type=writer.content_type)


def _wait(runtime: Runtime, job: Job, timeout: float, watch: "_ClientWatch"):
    """The job's transcription; a timeout or a client that left cancels the job's remaining work."""
    try:
        for kind, value in job.events(timeout=max(timeout, 1.0), poll=watch.check):
            if kind == "done":
                return value
    except (RequestTimeoutError, CancelledError) as exc:
        runtime.scheduler.cancel(job, exc)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _streamed(runtime: Runtime, job: Job, stream_writer: StreamWriter, scratch: ScratchDir, timeout: float,
              watch: "_ClientWatch", extra: dict, record: dict) -> Response:
    """Segments as they are decoded, one line (or event) each, then a summary or an error line."""

    def body() -> Iterator[str]:
        status = 200
        try:
            for kind, value in job.events(timeout=max(timeout, 1.0), poll=watch.check):
                if kind == "segments":
                    yield from (stream_writer.segment(s) for s in value)
                else:
                    processing = round(time.monotonic() - job.submitted, 3)
                    _record_result(record, job, value, extra)
                    yield stream_writer.done(value, {**extra, "processing_seconds": processing})
        except GeneratorExit:  # the client went away mid-stream
            runtime.scheduler.cancel(job)
            status = 499
            raise
        except Exception as exc:  # noqa: BLE001 - after the first byte, an error can only be a last line
            runtime.scheduler.cancel(job, exc)
            status = error_response(exc).status_code
            record["error_type"] = error_type(exc)
            yield stream_writer.error(exc, status)
        finally:
            scratch.close()
            _log(record, status)

    response = Response(body(), status=200, content_type=stream_writer.content_type)
    response.headers["X-Accel-Buffering"] = "no"  # nginx passes each line on as it comes
    response.headers["Cache-Control"] = "no-cache"
    return response


def _record_result(record: dict, job: Job, result, extra: dict) -> None:
    processing = round(time.monotonic() - job.submitted, 3)
    record.update(audio_seconds=round(result.duration, 3), processing_seconds=processing,
                  queued_seconds=round((job.started or job.submitted) - job.submitted, 3), engine_call=job.first_call,
                  rtf=round(processing / result.duration, 4) if result.duration else None, **extra)
    if result.warnings:
        record["warnings"] = list(result.warnings)


def _log(record: dict, status: int) -> None:
    record["status"] = status
    record["total_seconds"] = round(time.monotonic() - g.started, 3) if "started" in g else None
    events.info(json.dumps(record))


class _ClientWatch:
    """Notices a client that closed its connection while its transcription runs (so its work is dropped).

    Once the body is read, nothing more comes from a client that waits for its
    answer: a readable socket that gives zero bytes means it hung up.
    """

    def __init__(self, environ: dict):
        self.sock: Optional[socket.socket] = environ.get("gunicorn.socket")

    def check(self) -> None:
        if self.sock is None:
            return
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data == b"":
            raise CancelledError("the client closed the connection before the answer")


def _configure_logging(settings: Settings) -> None:
    """Outside gunicorn (tests, local runs) log to stdout; under gunicorn its logconfig_dict already did."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stdout, level=settings.log_level.upper(),
                            format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")


__all__ = ["create_app", "Invocation"]
