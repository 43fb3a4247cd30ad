"""One request's transcription, whichever door it came in by (``/invocations`` or ``/v1/audio/...``).

Each door parses its own body into an ``Invocation`` and renders its own
shapes. What lies between is here, once: the request's scratch folder,
submitting to the runtime, waiting within SAGEMAKER_MODEL_SERVER_TIMEOUT
while watching for a client that left, streaming segments as they are
decoded, and the one JSON log line every request writes.

A streamed answer waits for the job's first event before it sends its
status, so an error found before any segment (audio ffmpeg cannot decode, a
timeout in the queue) is an ordinary HTTP error. Once a segment is out, the
status is 200 and an error can only end the stream as its last line.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from flask import Response, g, request, stream_with_context

from ..core.job import Job
from ..core.options import Options
from ..core.results import Segment, Transcription
from ..core.runtime import Runtime
from ..diarization.engine import DiarizationEngine, served, speaker_model
from ..diarization.request import Diarizing, Naming, labelled
from ..errors import CancelledError, InvalidParameterError, UnsupportedOptionError
from ..metrics import record as metrics
from ..settings import Settings
from .errors import error_type, status_of
from .inputs import Invocation, ScratchDir

events_log = logging.getLogger("serve.events")


class StreamFormat(Protocol):
    """What a streamed answer is made of: one piece per segment, then a summary or an error."""

    content_type: str

    def segment(self, segment: Segment) -> str: ...

    def done(self, t: Transcription, extra: dict) -> str: ...

    def error(self, exc: BaseException, status: int) -> str: ...


class Transcribing:
    """A submitted request: its job, scratch folder, deadline and client, until its answer is complete."""

    def __init__(self, runtime: Runtime, job: Job, scratch: ScratchDir, timeout: float, record: dict,
                 speakers: Optional[Diarizing] = None):
        self.runtime = runtime
        self.job = job
        self.scratch = scratch
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.record = record
        self.speakers = speakers
        """The request's diarization, running beside its transcription (``diarize=true``)."""
        self.watch = ClientWatch(request.environ)

    @classmethod
    def start(cls, settings: Settings, runtime: Runtime, record: dict,
              read: Callable[[Path], Invocation], naming: Optional[Naming] = None) -> "Transcribing":
        """``read`` turns the body into a file in the given scratch folder; the job is then submitted.

        ``naming`` names the speakers that match known ones (diarized requests only).
        Whatever fails here leaves nothing behind (the scratch folder is removed).
        """
        runtime.require_ready()
        scratch = ScratchDir(settings.scratch_dir)
        try:
            invocation = read(scratch.path)
            record.update(input=invocation.kind, body_bytes=invocation.body_bytes)
            options = runtime.resolve(invocation.options)
            engine = diarization_engine(settings, runtime, options, invocation.stream)
            record["engine_calls_at_submit"] = runtime.scheduler.calls
            job = runtime.submit(invocation.path, scratch.path, options,
                                 speech=engine is not None and engine.reads_speech)
        except BaseException:
            scratch.close()
            raise
        speakers = Diarizing(job, engine, options.speakers, naming) if engine is not None else None
        remaining = settings.timeout - (time.monotonic() - g.started)
        return cls(runtime, job, scratch, max(remaining, 1.0), record, speakers)

    def events(self) -> Iterator[tuple[str, object]]:
        """The job's events (see ``Job.events``). A reader that stops early, a timeout or a client
        that left cancels the job's remaining work. The scratch folder goes when this ends and
        nothing of the scheduler reads it any more (an engine call in flight may still)."""
        try:
            for event in self.job.events(timeout=self.timeout, poll=self.watch.check):
                if "first_segment_seconds" not in self.record:  # time to first segment (or to an empty answer)
                    self.record["first_segment_seconds"] = round(time.monotonic() - self.job.submitted, 3)
                yield event
        except GeneratorExit:  # the reader stopped (client gone mid-stream); after "done", a no-op
            self.runtime.scheduler.cancel(self.job)
            raise
        except BaseException as exc:
            self.runtime.scheduler.cancel(self.job, exc)
            raise
        finally:
            self.job.release(self.scratch.close)

    def result(self) -> tuple[Transcription, dict]:
        """Wait for the whole transcription (logged as a success); with ``_finish``'s fields.

        A diarized request waits for its speakers too, and gets them laid over its segments."""
        result = None
        for kind, value in self.events():
            if kind == "done":
                result = value
        assert isinstance(result, Transcription)
        if self.speakers is not None:
            result = self._labelled(result)
        extra = self._finish(result)
        log(self.record, 200)
        return result, extra

    def stream(self, writer: StreamFormat) -> Response:
        """Segments as they are decoded, then the summary, or an error line if it fails midway."""
        events = self.events()
        first = next(events)  # raises the job's error while an HTTP status can still say it
        self.record.update(stream=True, first_event_seconds=round(time.monotonic() - self.job.submitted, 3))

        def body() -> Iterator[str]:
            status = 200
            try:
                for kind, value in itertools.chain([first], events):
                    if kind == "segments":
                        yield "".join(writer.segment(s) for s in value)
                    else:
                        yield writer.done(value, self._finish(value))
            except GeneratorExit:  # the client went away mid-stream
                status = 499
                raise
            except Exception as exc:  # noqa: BLE001 - after the first byte, an error can only be a last line
                status = status_of(exc)
                self.record["error_type"] = error_type(exc)
                yield writer.error(exc, status)
            finally:
                events.close()  # cancels the job if it is not done
                log(self.record, status)

        response = Response(stream_with_context(body()), status=200, content_type=writer.content_type)
        # nginx passes each piece on as it comes (X-Accel-Buffering); no Content-Length, so the
        # answer is sent with Transfer-Encoding: chunked, which is how SageMaker streams responses.
        response.headers["X-Accel-Buffering"] = "no"
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _labelled(self, result: Transcription) -> Transcription:
        assert self.speakers is not None
        try:
            turns, names = self.speakers.result(max(self.deadline - time.monotonic(), 0.0), poll=self.watch.check)
        except BaseException:
            self.speakers.cancel()  # what raised ends the request: the speakers are no longer needed
            raise
        self.record.update(diarization_seconds=round(self.speakers.seconds or 0.0, 3),
                           diarization_vad=self.speakers.vad, speakers=len({t.speaker for t in turns}))
        return labelled(result, turns, names, hide_words=self.job.options.hide_words)

    def _finish(self, result: Transcription) -> dict:
        """Record the result for the log; returns what JSON answers add: who made it, and how long it took."""
        job = self.job
        processing = round(time.monotonic() - job.submitted, 3)
        extra = {"backend": self.runtime.backend.name, "model": self.runtime.backend.model_name,
                 "processing_seconds": processing, "request_id": self.record.get("request_id")}
        # The scheduler's engine calls so far: a request whose first call (engine_call) is not above
        # this one's was decoded, at least in part, before this transcription was complete.
        self.record["engine_calls_at_done"] = self.runtime.scheduler.calls
        self.record.update(
            audio_seconds=round(result.duration, 3), processing_seconds=processing,
            queued_seconds=round((job.started or job.submitted) - job.submitted, 3), engine_call=job.first_call,
            rtf=round(processing / result.duration, 4) if result.duration else None,
            backend=extra["backend"], model=extra["model"])
        if result.warnings:
            self.record["warnings"] = list(result.warnings)
        return extra


def diarization_engine(settings: Settings, runtime: Runtime, options: Options,
                       streamed: bool) -> Optional[DiarizationEngine]:
    """The engine that diarizes this request, or None when it does not ask; a 400 when it cannot be done."""
    if options.speakers is None:
        return None
    if streamed:
        raise InvalidParameterError("diarize=true cannot be streamed: speakers are known only once the whole audio "
                                    "is heard; ask without stream=true (and without Accept: text/event-stream)",
                                    param="diarize")
    engine, reason = served(settings.diarization, settings.model_dir, *speaker_model_of(settings, runtime))
    if engine is None:
        raise UnsupportedOptionError(f"diarize=true cannot be served: {reason}", param="diarize")
    return engine


def speaker_model_of(settings: Settings, runtime: Runtime) -> tuple[str, Path, Optional[int]]:
    """Where this worker's embedded speaker model runs (diarization and known speakers share it)."""
    backend = runtime.require_ready()
    return speaker_model(backend.device.torch_device, settings.cache_dir, backend.device.cpu_threads)


def log(record: dict, status: int) -> None:
    """The request's one JSON line (``serve.events``), whatever its outcome, and its metrics (the same figures)."""
    record["status"] = status
    record["total_seconds"] = round(time.monotonic() - g.started, 3) if "started" in g else None
    events_log.info(json.dumps(record))
    metrics.request(metrics.RequestDone(
        route=record.get("route") or "", status=status, error_type=record.get("error_type") or "",
        seconds=record["total_seconds"] or 0.0, first_segment_seconds=record.get("first_segment_seconds"),
        audio_seconds=record.get("audio_seconds"), realtime_factor=record.get("rtf")))


def log_failure(record: dict, exc: BaseException, response: Response) -> Response:
    """Log a request that failed before its answer started; returns the error answer."""
    record["error_type"] = error_type(exc)
    log(record, response.status_code)
    return response


class ClientWatch:
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
