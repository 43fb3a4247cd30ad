"""What the server records, as a few named events; the outlets (Prometheus, EMF) receive them.

Code anywhere in ``serve`` calls these functions (``record.engine_call(4, 0.8)``)
and knows nothing of the libraries behind them. Nothing is installed by
default, so a module used alone (a unit test, the artifacts CLI) records
nothing and pays nothing; ``serve.metrics.start`` installs the outlets in a
worker.

A metric never fails what it measures: an outlet that raises is logged once
(per event) and the value is dropped.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Optional, Protocol

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The scheduler's windows are counted in 16 kHz samples."""


@dataclass(frozen=True)
class RequestDone:
    """One transcription request, whatever its outcome (what its JSON log line says)."""

    route: str
    status: int
    error_type: str
    """"" on success; otherwise a kind from the error table (a bounded set)."""
    seconds: float
    first_segment_seconds: Optional[float] = None
    """From submission to the first segment (or to the answer, for one without segments)."""
    audio_seconds: Optional[float] = None
    realtime_factor: Optional[float] = None


@dataclass(frozen=True)
class Sample:
    """What the periodic sampler reads (``gauges``): the worker's state now."""

    queued_windows: int
    queued_audio_seconds: float
    live_sessions: int
    rss_bytes: Optional[int]
    gpu_memory_bytes: Optional[int]


class Outlet(Protocol):
    """Where events go: ``registry.PrometheusOutlet``, ``emf.EmfOutlet``."""

    def request(self, r: RequestDone) -> None: ...

    def engine_call(self, batch: int, seconds: float) -> None: ...

    def decoded(self, seconds: float) -> None: ...

    def queue(self, windows: int, audio_seconds: float) -> None: ...

    def packing(self, on: bool) -> None: ...

    def live_session(self, open_now: int) -> None: ...

    def live_refused(self) -> None: ...

    def live_lagging(self) -> None: ...

    def model_loaded(self, load_seconds: float, warmup_seconds: float) -> None: ...

    def sample(self, s: Sample) -> None: ...


_outlets: list[Outlet] = []
_failed: set[str] = set()
_lock = threading.Lock()


@dataclass
class _State:
    """The last queue depth and live session count, for the sampler's gauge line."""

    queued_windows: int = 0
    queued_audio_seconds: float = 0.0
    live_sessions: int = 0


state = _State()


def install(*outlets: Outlet) -> None:
    """Send every event to ``outlets`` from now on (replacing those installed before)."""
    with _lock:
        _outlets[:] = outlets
        _failed.clear()


def installed() -> tuple[Outlet, ...]:
    return tuple(_outlets)


def _send(event: str, *args) -> None:
    for outlet in _outlets:
        try:
            getattr(outlet, event)(*args)
        except Exception:  # noqa: BLE001 - a metric never fails what it measures
            key = f"{type(outlet).__name__}.{event}"
            if key not in _failed:
                _failed.add(key)
                log.exception("recording %s failed; this metric is dropped (logged once)", key)


# --- the events -----------------------------------------------------------------------------------


def request(r: RequestDone) -> None:
    """A request's answer is complete (or failed): counts, latency, audio, real-time factor, cancels."""
    _send("request", r)


def engine_call(batch: int, seconds: float) -> None:
    """One engine call of ``batch`` windows took ``seconds``."""
    _send("engine_call", batch, seconds)


def decoded(seconds: float) -> None:
    """ffmpeg (or the WAV copy) decoded one request's audio in ``seconds``."""
    _send("decoded", seconds)


def queue(windows: int, samples: int) -> None:
    """Windows waiting for the engine now, and the audio they hold (in 16 kHz samples)."""
    state.queued_windows, state.queued_audio_seconds = windows, samples / SAMPLE_RATE
    _send("queue", windows, samples / SAMPLE_RATE)


def packing(on: bool) -> None:
    _send("packing", on)


def live_session(open_now: int) -> None:
    """A live session opened or closed: ``open_now`` are open in this worker."""
    state.live_sessions = open_now
    _send("live_session", open_now)


def live_refused() -> None:
    """A live session was refused (closed with 1013 at once)."""
    _send("live_refused")


def live_lagging() -> None:
    """A live session fell behind real time (its client was warned)."""
    _send("live_lagging")


def model_loaded(load_seconds: float, warmup_seconds: float) -> None:
    _send("model_loaded", load_seconds, warmup_seconds)


def sample(s: Sample) -> None:
    _send("sample", s)
