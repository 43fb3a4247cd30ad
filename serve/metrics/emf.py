"""The same figures for CloudWatch: Embedded Metric Format lines in the container's log.

CloudWatch Logs turns each line into metrics, with no agent and no extra IAM
(SageMaker already ships the container's stdout there). The lines are
serialized by AWS's own ``aws-embedded-metrics`` (its ``MetricsContext`` and
``LogSerializer``: the ``_aws`` block, 100 metrics and 100 values a line at
most); only its serializer is used, never its sinks or its environment
detection, which would probe the instance metadata address. Its
``AWS_EMF_ENVIRONMENT`` is set to ``Local`` all the same, before it is
imported, so that nothing of it ever connects out or waits.

Two kinds of line, both written by one background thread, off the request path:

- one per request: ``Requests``, ``RequestLatency``, ``TimeToFirstSegment``,
  ``AudioSeconds``, ``RealTimeFactor`` (and ``RequestsCancelled`` or
  ``RequestsTimedOut``), with the route, status and error kind as properties
  (searchable in Logs Insights, never dimensions). The request's id is in its
  own JSON line (``serve.events``) only, so that one line names each id;
- one per interval per worker (``gauges``): ``QueuedWindows``,
  ``QueuedAudioSeconds`` (the scaling signal), ``LiveSessions``,
  ``WorkerMemory``, ``GPUMemory``, and the values gathered since the last one:
  ``BatchSize``, ``EngineCallLatency``, ``DecodeLatency``,
  ``LiveSessionsRefused``, ``LiveSessionsLagging``; ``ModelLoadTime`` and
  ``WarmupTime`` once loaded.

Dimension sets: [EndpointName, VariantName] and [EndpointName, VariantName,
Backend, Model] (the second once the model is loaded).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

os.environ.setdefault("AWS_EMF_ENVIRONMENT", "Local")  # before the library reads its configuration

from aws_embedded_metrics.logger.metrics_context import MetricsContext  # noqa: E402
from aws_embedded_metrics.serializers.log_serializer import LogSerializer  # noqa: E402

from .record import RequestDone, Sample  # noqa: E402
from .registry import cancel_reason  # noqa: E402

log = logging.getLogger(__name__)
lines_log = logging.getLogger("serve.metrics.emf")
"""One EMF object per line, nothing around it (gunicorn_conf gives it the bare format)."""

MAX_PENDING = 10000
"""Lines waiting for the writer; beyond it (stdout blocked) new ones are dropped, never waited for."""
GATHERED = 100
"""Values of one metric gathered for the next gauge line; at this many, the line goes at once."""


@dataclass(frozen=True)
class Dimensions:
    namespace: str
    endpoint: str
    variant: str


class EmfOutlet:
    """Queues events; a daemon thread turns them into EMF lines on stdout."""

    def __init__(self, dims: Dimensions, served_by: Callable[[], Optional[tuple[str, str]]] = lambda: None):
        self.dims = dims
        self.served_by = served_by
        """(backend, model) once the model is loaded, else None."""
        self._queue: "queue.Queue[tuple]" = queue.Queue(MAX_PENDING)
        self._dropped = 0
        self._gathered: dict[str, list[float]] = {}
        self._counts = {"LiveSessionsRefused": 0, "LiveSessionsLagging": 0}
        self._loaded: Optional[tuple[float, float]] = None
        self._thread = threading.Thread(target=self._write, name="metrics-emf", daemon=True)
        self._thread.start()
        if not lines_log.handlers:  # outside gunicorn (a local run): a bare line on stdout
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            lines_log.addHandler(handler)
            lines_log.setLevel(logging.INFO)
            lines_log.propagate = False

    # --- the events (serve.metrics.record): put on the queue, never waited for ----------------------

    def request(self, r: RequestDone) -> None:
        self._put(("request", r))

    def engine_call(self, batch: int, seconds: float) -> None:
        self._put(("gather", "BatchSize", batch, "EngineCallLatency", seconds))

    def decoded(self, seconds: float) -> None:
        self._put(("gather", "DecodeLatency", seconds))

    def queue(self, windows: int, audio_seconds: float) -> None:
        pass  # sampled into the gauge line (a line per change would flood the log)

    def packing(self, on: bool) -> None:
        pass  # a setting, in the start-up log

    def live_session(self, open_now: int) -> None:
        pass  # sampled

    def live_refused(self) -> None:
        self._put(("count", "LiveSessionsRefused"))

    def live_lagging(self) -> None:
        self._put(("count", "LiveSessionsLagging"))

    def model_loaded(self, load_seconds: float, warmup_seconds: float) -> None:
        self._put(("loaded", load_seconds, warmup_seconds))

    def sample(self, s: Sample) -> None:
        self._put(("sample", s))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is written (tests, shutdown)."""
        done = threading.Event()
        self._put(("flush", done))
        return done.wait(timeout)

    def stop(self) -> None:
        """Write what is queued, then end the writer thread."""
        self._put(("stop",))

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("EMF lines are not being written fast enough; dropping metrics (logged once)")

    # --- the writer thread --------------------------------------------------------------------------

    def _write(self) -> None:
        while (item := self._queue.get())[0] != "stop":
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001 - a metric line that fails is dropped; the thread goes on
                log.exception("an EMF line could not be written; dropped")

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "request":
            self._emit(self.request_context(item[1]))
        elif kind == "gather":
            for name, value in zip(item[1::2], item[2::2]):
                self._gathered.setdefault(name, []).append(value)
            if any(len(v) >= GATHERED for v in self._gathered.values()):
                self._emit(self.gauge_context(None))
        elif kind == "count":
            self._counts[item[1]] += 1
        elif kind == "loaded":
            self._loaded = (item[1], item[2])
        elif kind == "sample":
            self._emit(self.gauge_context(item[1]))
        elif kind == "flush":
            item[1].set()

    def _context(self) -> MetricsContext:
        context = MetricsContext(namespace=self.dims.namespace)
        base = {"EndpointName": self.dims.endpoint, "VariantName": self.dims.variant}
        who = self.served_by()
        sets = [base] if who is None else [base, {**base, "Backend": who[0], "Model": who[1]}]
        context.set_dimensions(sets)
        context.set_property("pid", os.getpid())
        return context

    def request_context(self, r: RequestDone) -> MetricsContext:
        c = self._context()
        c.set_property("emf", "request")  # the request's id stays in its own JSON line: one line per id
        c.set_property("route", r.route)
        c.set_property("status", r.status)
        c.set_property("error_type", r.error_type)
        _put(c, "Requests", 1, "Count")
        _put(c, "RequestLatency", r.seconds, "Seconds")
        _put(c, "TimeToFirstSegment", r.first_segment_seconds, "Seconds")
        _put(c, "AudioSeconds", r.audio_seconds, "Seconds")
        _put(c, "RealTimeFactor", r.realtime_factor, "None")
        reason = cancel_reason(r)
        if reason:
            c.put_metric("RequestsTimedOut" if reason == "timeout" else "RequestsCancelled", 1, "Count")
        return c

    def gauge_context(self, s: Optional[Sample]) -> MetricsContext:
        """The gauge line: the sample (None: only what was gathered, sent early), then the gathered values."""
        c = self._context()
        c.set_property("emf", "gauges")
        if s is not None:
            _put(c, "QueuedWindows", s.queued_windows, "Count")
            _put(c, "QueuedAudioSeconds", s.queued_audio_seconds, "Seconds")
            _put(c, "LiveSessions", s.live_sessions, "Count")
            _put(c, "WorkerMemory", s.rss_bytes, "Bytes")
            _put(c, "GPUMemory", s.gpu_memory_bytes, "Bytes")
            if self._loaded is not None:
                _put(c, "ModelLoadTime", self._loaded[0], "Seconds")
                _put(c, "WarmupTime", self._loaded[1], "Seconds")
            for name, count in self._counts.items():
                c.put_metric(name, count, "Count")
                self._counts[name] = 0
        units = {"BatchSize": "Count", "EngineCallLatency": "Seconds", "DecodeLatency": "Seconds"}
        for name, values in self._gathered.items():
            for value in values:
                c.put_metric(name, value, units[name])
        self._gathered = {}
        return c

    def _emit(self, context: MetricsContext) -> None:
        for line in LogSerializer.serialize(context):
            lines_log.info(line)


def _put(context: MetricsContext, name: str, value: Optional[float], unit: str) -> None:
    """A metric in the line, unless there is no value for it (a request without audio has no real-time factor)."""
    if value is not None:
        context.put_metric(name, value, unit)
