"""The model of one worker process, from loading to serving.

The model loads in a background thread as soon as the worker starts, so the
worker answers /ping (503) at once instead of being silent for the minutes a
large model takes. /ping turns 200 only once the model is loaded *and* a
warm-up transcription of a spoken sentence went the whole way (ffmpeg, VAD,
scheduler, engine) and its words were recognised: a model that loads but
decodes garbage (wrong weights, broken half precision) never turns healthy.

Requests enter here: their options are resolved once against the loaded
model, then the scheduler owns them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import ModelNotReadyError, ServiceFaultError
from ..metrics import record as metrics
from ..settings import Settings
from .engine import Engine
from .options import Options, TranscribeOptions, resolve
from .scheduler import Job, Scheduler, SchedulerConfig

log = logging.getLogger(__name__)

WARMUP_AUDIO = Path(__file__).resolve().parents[1] / "assets" / "warmup.ogg"
WARMUP_TEXT = "Hello world, the model is ready."
WARMUP_MIN_WORDS = 0.5
"""Share of the warm-up sentence's words the model must hear (tiny.en hears all six)."""


def scheduler_config(settings: Settings, device_kind: str) -> SchedulerConfig:
    """The scheduler's knobs: each setting, or the default measured for this kind of device."""
    cuda = device_kind == "cuda"
    cores = len(os.sched_getaffinity(0))
    return SchedulerConfig(
        max_batch=settings.max_batch or (16 if cuda else 4),
        packing=settings.packing,
        decode_workers=settings.decode_workers or max(2, min(cores, 8)),
        max_audio_seconds=settings.max_audio_seconds,
        engine_timeout_s=settings.engine_timeout_s,
    )


class Runtime:
    """Loads the engine (``loader``: settings -> Engine, from the layer above), warms it up, and serves it.

    ``on_unhealthy(reason)`` runs once if the engine can no longer serve (the worker
    process exits there, so that it is replaced).
    """

    def __init__(self, settings: Settings, loader: Callable[[Settings], Engine],
                 on_unhealthy: Callable[[str], None] = lambda reason: None):
        self.settings = settings
        self._loader = loader
        self._on_unhealthy = on_unhealthy
        self.backend: Optional[Engine] = None
        self.scheduler: Optional[Scheduler] = None
        self.error: Optional[BaseException] = None
        self.load_seconds: Optional[float] = None
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Runtime":
        """Start loading in the background; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="model-load", daemon=True)
            self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def concurrency(self) -> int:
        """Requests this worker serves well at once: what fills one batch."""
        return self.scheduler.config.max_batch if self.scheduler else 1

    def _load(self) -> None:
        try:
            start = time.monotonic()
            backend = self._loader(self.settings)
            loaded = time.monotonic() - start
            # A WHISPER_* default the model cannot honour would fail every request: fail at start instead.
            resolve(TranscribeOptions(), self.settings.defaults, backend.capabilities)
            scheduler = Scheduler(backend, scheduler_config(self.settings, backend.device.kind), self._on_unhealthy)
            if self.settings.warmup:
                self._warm_up(scheduler, backend)
            self.load_seconds = time.monotonic() - start
            metrics.model_loaded(loaded, self.load_seconds - loaded)
        except BaseException as exc:  # noqa: BLE001 - reported by /ping and the log, never swallowed
            self.error = exc
            log.exception("model failed to load; /ping stays 503: %s", exc)
            return
        self.backend, self.scheduler = backend, scheduler
        log.info("model ready in %.1f s: %s; %s", self.load_seconds, backend.describe(), scheduler.config)
        self._ready.set()

    def _warm_up(self, scheduler: Scheduler, backend: Engine) -> None:
        """Transcribe a short spoken sentence shipped with the package, the whole way through."""
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="warmup-", dir=self.settings.scratch_dir) as scratch:
            options = resolve(TranscribeOptions(), self.settings.defaults, backend.capabilities)
            job = scheduler.submit(WARMUP_AUDIO, Path(scratch), options)
            try:
                result = job.wait(timeout=600)
            finally:
                scheduler.cancel(job)  # a no-op once done
                released = threading.Event()
                job.release(released.set)
                released.wait(600)  # the folder goes only once nothing reads it
        expected = set(_words(WARMUP_TEXT))
        heard = set(_words(result.text)) & expected
        if len(heard) < WARMUP_MIN_WORDS * len(expected):
            raise RuntimeError(f"warm-up transcription failed: expected {WARMUP_TEXT!r}, got {result.text!r}")
        log.info("warm-up transcription passed in %.2f s: %r", time.monotonic() - start, result.text)

    def shutdown(self, grace_s: float) -> None:
        """The worker is stopping: refuse new requests; answer those unfinished after ``grace_s`` with a 503."""
        if self.scheduler is not None:
            self.scheduler.shutdown(grace_s)

    @property
    def problem(self) -> Optional[str]:
        """Why this worker cannot serve now (loading, failed to load, engine unhealthy), or None."""
        if self.scheduler is not None and not self.scheduler.health.ok:
            return f"the engine can no longer serve: {self.scheduler.health.problem}"
        if self.backend is not None:
            return None
        if self.error is not None:
            return f"the model failed to load: {self.error}"
        return "the model is still loading; retry when /ping answers 200"

    def require_ready(self) -> Engine:
        if self.scheduler is not None and not self.scheduler.health.ok:
            raise ServiceFaultError(f"{self.problem}; send the request again")
        if self.backend is not None:
            return self.backend
        if self.error is not None:
            raise ModelNotReadyError(f"the model failed to load: {self.error}")
        raise ModelNotReadyError("the model is still loading; retry when /ping answers 200")

    def submit(self, source: Path, scratch: Path, options: TranscribeOptions | Options,
               continuing: bool = False, urgent: bool = False, speech: bool = False) -> Job:
        """Resolve the request's options (once, unless ``resolve`` did) and hand it to the scheduler
        (``continuing``, ``urgent``, ``speech``: see there)."""
        self.require_ready()
        assert self.scheduler is not None
        resolved = options if isinstance(options, Options) else self.resolve(options)
        return self.scheduler.submit(source, scratch, resolved, continuing, urgent, speech)

    def resolve(self, options: TranscribeOptions) -> Options:
        """``options`` over the server's defaults, checked against the loaded model (raises what it refuses)."""
        return resolve(options, self.settings.defaults, self.require_ready().capabilities)


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()
