"""Fault injection for the scheduler: a real engine wrapped so that a test decides when it fails, hangs or
waits, and a scheduler run over it.

Each wraps a loaded backend (the real tiny.en) and passes every call through,
except where the test asks otherwise. Windows are recognised by a marker in
their audio: ``MARK_RUN`` samples in a row of exactly ``MARK_VALUE`` in the
middle of the marked clip's speech (a 1 ms click; no speech holds a sample
that long), which survives decoding to 16-bit PCM, cutting and packing.
"""

from __future__ import annotations

import tempfile
import threading
import wave
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from serve.core.engine import Decoded, Engine
from serve.core.job import Job
from serve.core.options import DecodeOptions, TranscribeOptions, resolve
from serve.core.scheduler import Scheduler, SchedulerConfig
from tests import speech

MARK_VALUE = 12345
"""The marker's sample value (16-bit)."""
MARK_RUN = 16


def marked_copy(source: Path, target: Path) -> Path:
    """``source`` (16 kHz mono 16-bit WAV) with the marker written over its loudest moment."""
    with wave.open(str(source), "rb") as r:
        params = r.getparams()
        samples = np.frombuffer(r.readframes(r.getnframes()), dtype=np.int16).copy()
    at = int(np.argmax(np.abs(samples.astype(np.int32))))
    samples[at:at + MARK_RUN] = MARK_VALUE
    with wave.open(str(target), "wb") as w:
        w.setparams(params)
        w.writeframes(samples.tobytes())
    return target


def is_marked(window: np.ndarray) -> bool:
    at = np.flatnonzero(np.asarray(window) == np.float32(MARK_VALUE / 32768.0))
    if len(at) < MARK_RUN:
        return False
    runs = np.split(at, np.flatnonzero(np.diff(at) != 1) + 1)
    return any(len(run) >= MARK_RUN for run in runs)


class Wrapped(Engine):
    """A real engine whose calls are recorded, each first shown to the test's ``hooks`` (which may raise or wait).

    ``calls``: (windows, marked windows, options, temperature) per call, in order; ``prompts``: each
    call's prompt per window, where the engine takes one per window (else None).
    """

    def __init__(self, inner: Engine, *hooks: Callable[[Sequence[np.ndarray]], None]):
        super().__init__(inner.device, inner.model_name, inner.english_only)
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.support = inner.support  # type: ignore[misc]
        self.prompt_per_window = inner.prompt_per_window  # type: ignore[misc]
        self.hooks = list(hooks)
        self.calls: list[tuple[int, int, DecodeOptions, float]] = []
        self.prompts: list = []
        self._lock = threading.Lock()

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False, prompts=None) -> list[Decoded]:
        with self._lock:
            self.calls.append((len(windows), sum(is_marked(w) for w in windows), options, temperature))
            self.prompts.append(None if prompts is None else list(prompts))
        for hook in self.hooks:
            hook(windows)
        if prompts is None:
            return self.inner.decode(windows, options, temperature, scores)
        return self.inner.decode(windows, options, temperature, scores, prompts)


class Raise:
    """A hook: raises ``error()`` in every call that holds a marked window."""

    def __init__(self, error: Callable[[], BaseException]):
        self.error = error
        self.raised = 0

    def __call__(self, windows: Sequence[np.ndarray]) -> None:
        if any(is_marked(w) for w in windows):
            self.raised += 1
            raise self.error()


class Gate:
    """A hook: each call waits until the test lets it through (``step``), until ``open_all``."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self._steps = threading.Semaphore(0)
        self.opened = threading.Event()

    def __call__(self, windows: Sequence[np.ndarray]) -> None:
        if self.opened.is_set():
            return
        self.entered.release()
        while not self._steps.acquire(timeout=0.05):
            if self.opened.is_set():
                return

    def wait_entered(self, timeout: float = 600) -> None:
        assert self.entered.acquire(timeout=timeout), "no engine call came"

    def step(self) -> None:
        self._steps.release()

    def open_all(self) -> None:
        self.opened.set()


def wait_until(condition: Callable[[], bool], timeout: float = 600, what: Optional[str] = None) -> None:
    """Poll ``condition`` until true; the bound only catches a hang, it is never the point of a test."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what or condition}"
        time.sleep(0.02)


class Run:
    """A scheduler over a wrapped engine, and the scratch folders of its requests."""

    def __init__(self, engine, folder: Path, **config):
        self.engine = engine
        self.folder = folder
        self.unhealthy: list[str] = []
        self.scheduler = Scheduler(engine, SchedulerConfig(**{"max_batch": 8, "decode_workers": 4, **config}),
                                   on_unhealthy=self.unhealthy.append)
        self.scratch: dict[int, Path] = {}

    def submit(self, path: Path, urgent: bool = False, speech: bool = False, **options) -> Job:
        scratch = Path(tempfile.mkdtemp(dir=self.folder))
        job = self.scheduler.submit(path, scratch, resolve(TranscribeOptions(**options), TranscribeOptions(),
                                                           self.engine.capabilities), urgent=urgent, speech=speech)
        self.scratch[job.id] = scratch
        return job

    def together(self, gate: Gate, paths: list[Path], **options) -> list[Job]:
        """Submit ``paths`` while a first request holds the engine at ``gate``; all are queued when it opens."""
        blocker = self.submit(speech.corpus(16)[8].path)
        gate.wait_entered()
        jobs = [self.submit(p, **options) for p in paths]
        wait_until(lambda: all(j.cut_all for j in jobs), what="every request cut into windows")
        gate.open_all()
        blocker.wait(600)
        return jobs

    def close(self) -> None:
        for hook in self.engine.hooks:
            if isinstance(hook, Gate):
                hook.open_all()  # a test that failed midway leaves no call waiting
        self.scheduler.stop()


def outcome(job: Job):
    """The request's transcription, or what it raised."""
    try:
        return job.wait(600)
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return exc


def assert_own_text(results, clips) -> None:
    """Each result is its own clip's words (nearer its own text than any other's, within the clip bound)."""
    refs = [c.text for c in clips]
    for clip, result in zip(clips, results):
        assert not isinstance(result, BaseException), f"{clip.text!r} failed: {result!r}"
        assert speech.nearest(result.text, refs) == clip.text, (clip.text, result.text)
        assert speech.wer([clip.text], [result.text]) <= speech.MAX_CLIP_WER, (clip.text, result.text)
