"""The Prometheus metrics (``prometheus_client``), counted across every gunicorn worker, and ``GET /metrics``.

Multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set (``container/serve``
sets it, emptied at start), each worker writes its values to files there and
``render`` sums them, so a scrape answered by any one worker shows them all.
The master marks a dead worker's files (``worker_gone``) so that its live
gauges stop counting. Without the variable (one process, in-process tests),
the values stay in this process.

Labels are bounded: routes, statuses and error kinds come from fixed tables,
never from a request's content.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .record import RequestDone, Sample

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DECODE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class PrometheusOutlet:
    """The metric catalogue (README, "Metrics"); one instance per worker process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("whisper_requests", "Transcription requests by route, status and error kind",
                                ["route", "status", "error_type"], registry=r)
        self.request_seconds = Histogram("whisper_request_seconds", "Time from arrival to the last byte of the answer",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_segment = Histogram("whisper_first_segment_seconds", "Time from submission to the first segment",
                                       ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.audio = Counter("whisper_audio_seconds", "Seconds of audio transcribed", ["route"], registry=r)
        self.rtf = Histogram("whisper_realtime_factor", "Processing seconds per second of audio, per request",
                             ["route"], buckets=RTF_BUCKETS, registry=r)
        self.queued_windows = Gauge("whisper_queued_windows", "30 s windows waiting for the engine",
                                    multiprocess_mode="livesum", registry=r)
        self.queued_audio = Gauge("whisper_queued_audio_seconds", "Seconds of audio in the windows waiting",
                                  multiprocess_mode="livesum", registry=r)
        self.batch = Histogram("whisper_batch_size", "Windows per engine call", buckets=BATCH_BUCKETS, registry=r)
        self.engine_call_seconds = Histogram("whisper_engine_call_seconds", "Duration of one engine call",
                                             buckets=CALL_BUCKETS, registry=r)
        self.packing_on = Gauge("whisper_packing", "1 when short windows of several requests are packed together",
                                multiprocess_mode="livemax", registry=r)
        self.decode_seconds = Histogram("whisper_decode_seconds", "ffmpeg decode of one request's audio",
                                        buckets=DECODE_BUCKETS, registry=r)
        self.cancelled = Counter("whisper_requests_cancelled", "Requests given up: the client left, or a timeout",
                                 ["reason"], registry=r)
        self.live_open = Gauge("whisper_live_sessions", "Live sessions open", multiprocess_mode="livesum", registry=r)
        self.live_refused_total = Counter("whisper_live_sessions_refused",
                                          "Live sessions refused with 1013 (full, behind or stopping)", registry=r)
        self.live_lagging_total = Counter("whisper_live_sessions_lagging", "Live sessions that fell behind real time",
                                          registry=r)
        self.load_seconds = Gauge("whisper_model_load_seconds", "Time to load the model",
                                  multiprocess_mode="livemax", registry=r)
        self.warmup_seconds = Gauge("whisper_warmup_seconds", "Time of the warm-up transcription",
                                    multiprocess_mode="livemax", registry=r)
        self.rss = Gauge("whisper_worker_rss_bytes", "Resident memory of each worker process",
                         multiprocess_mode="liveall", registry=r)
        self.gpu: Gauge | None = None
        """Made at its first value: a worker without CUDA shows no GPU gauge at all (not a 0)."""
        # Known label values start at 0, so a rate() over them has a start
        self.cancelled.labels("client_left")
        self.cancelled.labels("timeout")

    # --- the events (serve.metrics.record) --------------------------------------------------------

    def request(self, r: RequestDone) -> None:
        self.requests.labels(r.route, str(r.status), r.error_type).inc()
        self.request_seconds.labels(r.route).observe(r.seconds)
        if r.first_segment_seconds is not None:
            self.first_segment.labels(r.route).observe(r.first_segment_seconds)
        if r.audio_seconds is not None:
            self.audio.labels(r.route).inc(r.audio_seconds)
        if r.realtime_factor is not None:
            self.rtf.labels(r.route).observe(r.realtime_factor)
        reason = cancel_reason(r)
        if reason:
            self.cancelled.labels(reason).inc()

    def engine_call(self, batch: int, seconds: float) -> None:
        self.batch.observe(batch)
        self.engine_call_seconds.observe(seconds)

    def decoded(self, seconds: float) -> None:
        self.decode_seconds.observe(seconds)

    def queue(self, windows: int, audio_seconds: float) -> None:
        self.queued_windows.set(windows)
        self.queued_audio.set(audio_seconds)

    def packing(self, on: bool) -> None:
        self.packing_on.set(1 if on else 0)

    def live_session(self, open_now: int) -> None:
        self.live_open.set(open_now)

    def live_refused(self) -> None:
        self.live_refused_total.inc()

    def live_lagging(self) -> None:
        self.live_lagging_total.inc()

    def model_loaded(self, load_seconds: float, warmup_seconds: float) -> None:
        self.load_seconds.set(load_seconds)
        self.warmup_seconds.set(warmup_seconds)

    def sample(self, s: Sample) -> None:
        if s.rss_bytes is not None:
            self.rss.set(s.rss_bytes)
        if s.gpu_memory_bytes is not None:
            if self.gpu is None:
                self.gpu = Gauge("whisper_gpu_memory_bytes", "GPU memory in use on each worker's GPU (CUDA only)",
                                 multiprocess_mode="liveall", registry=self.registry)
            self.gpu.set(s.gpu_memory_bytes)

    def render(self) -> bytes:
        """The text format: every worker's values in multiprocess mode, else this process's."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def cancel_reason(r: RequestDone) -> str:
    """``client_left`` (499) or ``timeout`` (the request's own deadline), else ""."""
    if r.status == 499:
        return "client_left"
    if r.error_type == "Timeout":
        return "timeout"
    return ""


def worker_gone(pid: int) -> None:
    """In gunicorn's master, when a worker exits: its live gauges no longer count."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
