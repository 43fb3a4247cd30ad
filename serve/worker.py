"""The model of one gunicorn worker process and the inference queue in front of it.

The model loads in a background thread as soon as the worker starts, so the
worker answers /ping (503) at once instead of being silent for the minutes a
large model takes; /ping turns 200 only once the model is loaded *and* a
warm-up transcription of a spoken sentence (through ffmpeg and the backend) passed.

Every transcription goes through one queue consumed by one inference thread.
Request threads only enqueue and wait, so /ping never waits on inference,
GPU memory holds one request's activations at a time, and concurrent requests
are in one place where they can later be batched together.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .backends.base import Backend
from .errors import ModelNotReadyError, RequestTimeoutError
from .settings import Settings
from .transcribe import transcribe_file
from .transcription import TranscribeOptions, Transcription

log = logging.getLogger(__name__)

WARMUP_AUDIO = Path(__file__).with_name("assets") / "warmup.ogg"
WARMUP_TEXT = "Hello world, the model is ready."


@dataclass
class Result:
    transcription: Transcription
    processing_seconds: float
    """Decode + inference time of this request alone (excludes waiting in the queue)."""
    queued_seconds: float


@dataclass
class _Job:
    path: Path
    options: TranscribeOptions
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)


class ModelWorker:
    """Loads the backend once, then serves transcriptions from a queue, one at a time."""

    concurrency = 1
    """Transcriptions this worker runs at once (MaxConcurrentTransforms counts it)."""

    def __init__(self, settings: Settings, loader: Optional[Callable[[Settings], Backend]] = None):
        self.settings = settings
        self._loader = loader
        self.backend: Optional[Backend] = None
        self.error: Optional[BaseException] = None
        self.load_seconds: Optional[float] = None
        self._ready = threading.Event()
        self._jobs: "queue.Queue[_Job]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "ModelWorker":
        """Start loading in the background; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
            self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def queue_depth(self) -> int:
        return self._jobs.qsize()

    def _run(self) -> None:
        try:
            start = time.monotonic()
            loader = self._loader
            if loader is None:
                from .backends import load_backend as loader
            backend = loader(self.settings)
            if self.settings.warmup:
                self._warm_up(backend)
            self.load_seconds = time.monotonic() - start
        except BaseException as exc:  # noqa: BLE001 - reported by /ping and the log, never swallowed
            self.error = exc
            log.exception("model failed to load; /ping stays 503: %s", exc)
            return
        self.backend = backend
        log.info("model ready in %.1f s: %s", self.load_seconds, backend.describe())
        self._ready.set()
        while True:
            self._execute(backend, self._jobs.get())

    def _warm_up(self, backend: Backend) -> None:
        """Transcribe a short spoken sentence shipped with the package.

        Proves ffmpeg, the model, the device and the precision work together
        before /ping says 200: a model that loads but decodes garbage (wrong
        weights, broken fp16) fails here. Speech, not silence: on silence the
        transformers pipeline hallucinates 448 tokens, a minute on a CPU.
        """
        start = time.monotonic()
        result = transcribe_file(backend, WARMUP_AUDIO, TranscribeOptions())
        heard = set(_words(result.text))
        if not heard & set(_words(WARMUP_TEXT)):
            raise RuntimeError(f"warm-up transcription failed: expected {WARMUP_TEXT!r}, got {result.text!r}")
        log.info("warm-up transcription passed in %.2f s: %r", time.monotonic() - start, result.text)

    def _execute(self, backend: Backend, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # the request gave up (timeout) before its turn came
        started = time.monotonic()
        try:
            transcription = transcribe_file(backend, job.path, job.options)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request thread
            job.future.set_exception(exc)
        else:
            job.future.set_result(Result(transcription, time.monotonic() - started, started - job.submitted))

    # --- requests -------------------------------------------------------------------------------

    def require_ready(self) -> Backend:
        if self.backend is not None:
            return self.backend
        if self.error is not None:
            raise ModelNotReadyError(f"the model failed to load: {self.error}")
        raise ModelNotReadyError("the model is still loading; retry when /ping answers 200")

    def transcribe(self, path: Path, options: TranscribeOptions, timeout: Optional[float] = None) -> Result:
        """Queue ``path`` for transcription and wait for it (the file must stay until this returns)."""
        self.require_ready()
        job = _Job(path, options)
        self._jobs.put(job)
        try:
            return job.future.result(timeout=timeout)
        except FutureTimeout:
            job.future.cancel()  # only succeeds while it still waits in the queue
            raise RequestTimeoutError(
                f"transcription did not finish within {timeout:.0f} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)"
            ) from None


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()
