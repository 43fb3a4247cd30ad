"""Metrics: one set of figures, two outlets (Prometheus at ``GET /metrics``, CloudWatch EMF lines in the log).

- ``record``: the named events the rest of ``serve`` records (no metrics library behind it);
- ``registry``: the Prometheus metrics, multiprocess across gunicorn workers;
- ``emf``: CloudWatch Embedded Metric Format lines, written off the request path;
- ``gauges``: the periodic sampler (queue depth, memory).

``start`` installs both outlets in a worker (WHISPER_METRICS=on, the
default); only this package imports a metrics library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from . import record
from .gauges import gpu_memory_used

_current: Optional["Metrics"] = None


@dataclass(frozen=True)
class MetricsConfig:
    namespace: str = "WhisperSageMaker"
    interval_s: float = 60.0
    endpoint: str = "local"
    variant: str = "AllTraffic"


@dataclass
class Metrics:
    """A worker's outlets, once started: ``render`` answers ``GET /metrics``."""

    prometheus: object
    emf: object
    sampler: object

    def stop(self) -> None:
        self.sampler.stop()  # type: ignore[attr-defined]
        self.emf.stop()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return self.prometheus.render()  # type: ignore[attr-defined]

    @property
    def content_type(self) -> str:
        from .registry import CONTENT_TYPE

        return CONTENT_TYPE


def start(config: MetricsConfig, served_by: Callable[[], Optional[tuple[str, str]]] = lambda: None,
          gpu_memory: Callable[[], Optional[int]] = lambda: None) -> Metrics:
    """Install the Prometheus and EMF outlets in this process and start the sampler (one set a process:
    those started before, by an earlier app in the same process, stop)."""
    global _current
    from .emf import Dimensions, EmfOutlet
    from .gauges import Sampler
    from .registry import PrometheusOutlet

    prometheus = PrometheusOutlet()
    emf = EmfOutlet(Dimensions(config.namespace, config.endpoint, config.variant), served_by)
    record.install(prometheus, emf)
    if _current is not None:
        _current.stop()
    sampler = Sampler(config.interval_s, gpu_memory).start()
    _current = Metrics(prometheus, emf, sampler)
    return _current


def off() -> None:
    """No outlets in this process (WHISPER_METRICS=off): every event is a no-op."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
    record.install()


def worker_gone(pid: int) -> None:
    """In gunicorn's master: a worker exited, its live gauges stop counting."""
    from .registry import worker_gone as gone

    gone(pid)
