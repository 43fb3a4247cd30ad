"""One scheduler per worker (per GPU): concurrent requests become batched engine calls.

The flow of a request, once its body is on disk:

1. **decode**: a bounded pool of ffmpeg processes turns it into 16 kHz PCM on
   disk (``audio.decode_to_file``), outside the inference thread;
2. **cut**: a thread per request turns the audio into windows of at most 30 s
   as it arrives (``segments.windows``: VAD, or quiet cuts);
3. **batch**: the inference thread takes up to ``max_batch`` ready windows
   from all waiting requests, one per request per round (round robin, so a
   3-hour file cannot starve a 3-second clip), whose decoding options are
   equal, and decodes them in one engine call, with Whisper's temperature
   fallback per window;
4. **deliver**: each window's segments go back to its request, in order, as
   soon as all earlier ones are done (what streaming sends); the request
   completes when its last window has.

Packing (the default on CPU): short windows of different requests share one
30 s engine window, 2 s of silence apart. Whisper's encoder always runs on
30 s, so three 5 s clips cost one encoder pass instead of three (measured
x2.9-3.6 on short clips on a 2-core CPU, where stacking padded windows gains
nothing). The price, checked after every packed decode: if a segment
straddles two requests, a window needs a temperature fallback, looks like
silence, stopped early, or one request got no text, each request's window is
decoded again on its own. Packed clips are decoded with their neighbours'
text as context, like ``condition_on_previous_text``; set
``WHISPER_PACKING=off`` for transcripts that never depend on other traffic.

A request that times out or whose client left is cancelled: its ffmpeg is
killed and its windows are dropped before they reach the engine.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..backends.base import Backend, Decoded
from ..errors import CancelledError, RequestTimeoutError, ShuttingDownError, WhisperServeError
from .audio import SAMPLE_RATE, AudioFile, decode_to_file
from .options import Options
from .results import Segment, Transcription, Word
from .segments import Window

log = logging.getLogger(__name__)

PACK_GAP_S = 2.0
"""Silence between requests packed into one engine window: at 0.5 s a packed
window fell into a repetition loop; at 1 and 2 s no segment straddled two clips."""
MAX_WINDOW_S = 30.0
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
POLL_S = 0.5
MIN_PROGRESS_S = 0.5
MIN_TAIL_SPEECH_S = 0.5
"""Speech after a window's last segment that makes the rest of the window be decoded again."""
"""A window whose decoder stopped early is decoded again from there, if that moves forward at all."""
"""Whisper's own thresholds: a window is decoded again at the next temperature when its text
compresses too well (a loop) or is too unlikely, unless it is silence (no-speech probability
above 0.6 with an unlikely text), which yields no segment."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 8
    """Windows per engine call (WHISPER_MAX_BATCH)."""
    packing: bool = False
    """Pack short windows of several requests into one engine window (WHISPER_PACKING)."""
    decode_workers: int = 4
    """ffmpeg processes decoding at once (WHISPER_DECODE_WORKERS)."""
    max_audio_seconds: float = 0.0
    """Longest audio one request may decode, 0 = no limit (WHISPER_MAX_AUDIO_SECONDS)."""
    sequential_seconds: float = 600.0
    """Window of the engine's own long-form loop for sequential requests (WHISPER_WINDOW_SECONDS)."""


@dataclass(order=True)
class _Entry:
    """One window of one request, on its way to the engine."""

    key: tuple
    """Order within the request: (k,) from the cutter, (k, 1) for what is left of (k,) after an early stop."""
    window: Window = field(compare=False)
    job: "Job" = field(compare=False)
    solo: bool = field(default=False, compare=False)
    """Decode on its own, never packed with another request (after a doubtful packed decode)."""


class Job:
    """One request in the scheduler: its audio, its windows in flight, and what its reader receives."""

    _ids = itertools.count(1)

    def __init__(self, source: Path, scratch: Path, options: Options):
        self.id = next(self._ids)
        self.source = source
        self.options = options
        self.audio = AudioFile(scratch / "audio.pcm")
        self.submitted = time.monotonic()
        self.started: Optional[float] = None
        """When the engine first took one of its windows."""
        self.first_call: Optional[int] = None
        """The number of the engine call that first took one of its windows."""
        self.language: Optional[str] = options.decode.language
        self.queue: deque[_Entry] = deque()
        self.outstanding: set[tuple] = set()
        """Keys of the windows not yet delivered (queued or in the engine)."""
        self.done: dict[tuple, list[Segment]] = {}
        self.cut_all = False
        self.segments: list[Segment] = []
        self.cancelled = threading.Event()
        self.error: Optional[BaseException] = None
        self.result: Optional[Transcription] = None
        self.processing_seconds = 0.0
        self._events: "deque[tuple[str, object]]" = deque()
        self._event = threading.Condition()

    # --- what the request thread reads --------------------------------------------------------

    def events(self, timeout: Optional[float] = None,
               poll: Callable[[], None] = lambda: None) -> Iterator[tuple[str, object]]:
        """("segments", [Segment...]) in order as they are decoded, then ("done", Transcription).

        Raises the request's error, or ``RequestTimeoutError`` after ``timeout`` seconds in all.
        ``poll`` runs about twice a second while waiting; what it raises ends the wait.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._event:
                while not self._events:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise RequestTimeoutError(
                            f"transcription did not finish within {timeout:.0f} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)")
                    self._event.wait(POLL_S if remaining is None else min(remaining, POLL_S))
                    if not self._events:
                        poll()
                kind, value = self._events.popleft()
            if kind == "error":
                raise value  # type: ignore[misc]
            yield kind, value
            if kind == "done":
                return

    def wait(self, timeout: Optional[float] = None) -> Transcription:
        for kind, value in self.events(timeout):
            if kind == "done":
                return value  # type: ignore[return-value]
        raise AssertionError("unreachable")

    def _post(self, kind: str, value: object) -> None:
        with self._event:
            self._events.append((kind, value))
            self._event.notify_all()


class Scheduler:
    """Owns the engine of one worker: the decode pool, the batches and the inference thread."""

    def __init__(self, backend: Backend, config: SchedulerConfig):
        self.backend = backend
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=config.decode_workers, thread_name_prefix="decode")
        self._vad_slots = threading.Semaphore(config.decode_workers)
        self._jobs: deque[Job] = deque()
        """Round-robin order of the requests with work left."""
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False
        self._cutters: set[threading.Thread] = set()
        self.calls = 0
        """Engine calls started so far (for tests and logs)."""
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()
        # Native engine code running in a daemon thread while the interpreter exits crashes it.
        atexit.register(self.stop)

    # --- requests -----------------------------------------------------------------------------

    def submit(self, source: Path, scratch: Path, options: Options) -> Job:
        """Start decoding ``source`` (the file must stay until the job ends); returns at once."""
        job = Job(source, scratch, options)
        with self._cond:
            if self._closing:
                raise ShuttingDownError("the server is shutting down; send the request again")
            self._jobs.append(job)
        self._pool.submit(self._decode, job)
        cutter = threading.Thread(target=self._cut, args=(job,), name=f"cut-{job.id}", daemon=True)
        with self._cond:
            self._cutters.add(cutter)
        cutter.start()
        return job

    def cancel(self, job: Job, error: Optional[BaseException] = None) -> None:
        """Stop all work for ``job``: its ffmpeg, its queued windows. Its reader gets ``error`` if given."""
        with self._cond:
            if job.cancelled.is_set() or job.result is not None:
                return
            job.cancelled.set()
            job.queue.clear()
            self._forget(job)
        job.error = error or CancelledError("the request was given up")
        job._post("error", job.error)

    def shutdown(self, grace_s: float) -> None:
        """Refuse new requests; those not finished within ``grace_s`` get ShuttingDownError (503 + Retry-After)."""
        with self._cond:
            self._closing = True

        def expire():
            with self._cond:
                unfinished = list(self._jobs)
            for job in unfinished:
                self.cancel(job, ShuttingDownError(
                    "the server is shutting down and this request would not finish in time; send it again"))

        timer = threading.Timer(grace_s, expire)
        timer.daemon = True
        timer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything and wait (a few seconds) for the engine call in flight to end (at exit)."""
        with self._cond:
            self._closing = self._stopped = True
            jobs, cutters = list(self._jobs), list(self._cutters)
            self._cond.notify_all()
        for job in jobs:
            self.cancel(job, ShuttingDownError("the server stopped"))
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *cutters]:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- decode and cut (outside the inference thread) ----------------------------------------

    def _decode(self, job: Job) -> None:
        if job.cancelled.is_set():
            job.audio._finish(CancelledError("the request was given up"))
            return
        try:
            decode_to_file(job.source, job.audio, self.config.max_audio_seconds, job.cancelled)
        except BaseException:  # noqa: BLE001 - recorded on job.audio; the cutter reports it
            pass

    def _cut(self, job: Job) -> None:
        from .segments import windows

        try:
            cuts = windows(job.audio, job.options, self.config.sequential_seconds, lambda: self._vad_slots)
            for k, window in enumerate(cuts):
                if job.cancelled.is_set():
                    break
                self._add(job, _Entry((k,), window, job))
        except BaseException as exc:  # noqa: BLE001 - the request fails with it
            job.audio.error = job.audio.error or exc
            log.exception("cutting request %d failed", job.id)
        finally:
            with self._cond:
                self._cutters.discard(threading.current_thread())
        job.audio.wait_for(1 << 62)  # decoding ended (the cutter may stop early on an error)
        error = job.audio.error
        if error is not None and not isinstance(error, CancelledError):
            self.cancel(job, error)
            return
        with self._cond:
            job.cut_all = True
            self._maybe_finish(job)

    def _add(self, job: Job, entry: _Entry, front: bool = False) -> None:
        """Queue a window that is new to the job (from the cutter, or what is left after an early stop)."""
        with self._cond:
            if job.cancelled.is_set():
                return
            job.outstanding.add(entry.key)
            (job.queue.appendleft if front else job.queue.append)(entry)
            self._cond.notify_all()

    def _requeue(self, entries: list[_Entry]) -> None:
        """Put windows taken for the engine back at the front of their queues, in order, to decode alone."""
        with self._cond:
            for e in sorted(entries, reverse=True):
                if not e.job.cancelled.is_set():
                    e.job.queue.appendleft(replace(e, solo=True))
            self._cond.notify_all()

    # --- the inference thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            packs = self._take()
            if not packs:
                return  # stopped
            started = time.monotonic()
            try:
                if packs[0][0].job.options.sequential:
                    self._sequential(packs[0][0])
                else:
                    self._batch(packs)
            except BaseException as exc:  # noqa: BLE001 - the engine failed: its requests get the error
                log.exception("engine call failed")
                for entry in {id(e.job): e for pack in packs for e in pack}.values():
                    self.cancel(entry.job, exc if isinstance(exc, WhisperServeError) else exc)
            jobs = {id(e.job): e.job for pack in packs for e in pack}.values()
            for job in jobs:
                job.processing_seconds += (time.monotonic() - started) / len(jobs)

    def _take(self) -> list[list[_Entry]]:
        """The next engine call: packs of entries, all with the same decoding options (or one sequential window)."""
        with self._cond:
            while not any(j.queue for j in self._jobs):
                if self._stopped:
                    return []
                self._cond.wait()
            head = next(j for j in self._jobs if j.queue)
            self._jobs.remove(head)  # to the back: the next call starts with the next request
            self._jobs.append(head)
            self.calls += 1
            if head.options.sequential:
                self._mark_started(head)
                return [[head.queue.popleft()]]
            order = [head] + [j for j in self._jobs if j is not head and j.queue and not j.options.sequential
                              and j.options.decode == head.options.decode]
            packable = self.config.packing and head.options.decode.language is not None
            packs: list[list[_Entry]] = []
            lengths: list[int] = []
            limit = int(MAX_WINDOW_S * SAMPLE_RATE)
            gap = int(PACK_GAP_S * SAMPLE_RATE)
            progressed = True
            while progressed:
                progressed = False
                for job in order:  # one window per request per round
                    if not job.queue:
                        continue
                    entry = job.queue[0]
                    size = entry.window.length
                    spot = None
                    if packable and not entry.solo:
                        spot = next((i for i, p in enumerate(packs) if not p[0].solo
                                     and lengths[i] + gap + size <= limit), None)
                    if spot is not None:
                        packs[spot].append(entry)
                        lengths[spot] += gap + size
                    elif len(packs) < self.config.max_batch:
                        packs.append([entry])
                        lengths.append(size)
                    else:
                        continue
                    job.queue.popleft()
                    self._mark_started(job)
                    progressed = True
            return packs

    def _mark_started(self, job: Job) -> None:
        if job.started is None:
            job.started, job.first_call = time.monotonic(), self.calls

    def _sequential(self, entry: _Entry) -> None:
        job = entry.job
        if job.cancelled.is_set():
            return
        offset = entry.window.start / SAMPLE_RATE
        result = self.backend.transcribe(entry.window.audio(job.audio), job.options)
        job.language = job.language or result.language
        self._deliver(entry, [_shift(s, offset) for s in result.segments])

    def _batch(self, packs: list[list[_Entry]]) -> None:
        packs = [[e for e in pack if not e.job.cancelled.is_set()] for pack in packs]
        packs = [p for p in packs if p]
        if not packs:
            return
        options = packs[0][0].job.options.decode
        arrays = [_pack_audio(pack) for pack in packs]
        best: list[Optional[Decoded]] = [None] * len(packs)
        pending = list(range(len(packs)))
        for n, temperature in enumerate(options.temperatures):
            decoded = self.backend.decode([arrays[i] for i in pending], options, temperature)
            retry = []
            for i, d in zip(pending, decoded):
                best[i] = _better(best[i], d)
                last = n == len(options.temperatures) - 1
                if _needs_fallback(d) and not last and len(packs[i]) == 1:
                    retry.append(i)
            pending = [i for i in retry if not packs[i][0].job.cancelled.is_set()]  # a given-up request: no retry
            if not pending:
                break
        for pack, audio, d in zip(packs, arrays, best):
            if len(pack) == 1:
                self._finish_window(pack[0], audio, d)
            else:
                self._finish_pack(pack, audio, d)

    def _finish_window(self, entry: _Entry, audio: np.ndarray, d: Decoded) -> None:
        """One request's window: silence yields nothing; speech left undecoded is decoded again from there.

        Whisper may stop before the end of a window: with unfinished text
        (``resume_at``), or by closing its last segment while speech goes on
        (it often leaves the last seconds of a window for the next one, which
        a batch of independent windows does not have). Either way, the rest
        of the window is decoded again, as Whisper's own loop does by seeking.
        """
        job = entry.job
        if job.cancelled.is_set():
            return
        job.language = job.language or d.language
        if _is_silence(d):
            self._deliver(entry, [])
            return
        stop = d.resume_at
        if stop is None and d.segments and _speech_after(audio, d.segments[-1].end):
            stop = d.segments[-1].end
        if stop is not None and stop >= MIN_PROGRESS_S:
            rest = entry.window.after(stop)
            if rest is not None:
                self._add(job, _Entry(entry.key + (1,), rest, job, solo=entry.solo), front=True)
        self._deliver(entry, [_to_source(s, entry.window, 0.0) for s in d.segments])

    def _finish_pack(self, pack: list[_Entry], audio: np.ndarray, d: Decoded) -> None:
        """Several requests in one engine window: split the segments back, or decode each alone if in doubt."""
        offsets, at = [], 0
        for e in pack:
            offsets.append(at / SAMPLE_RATE)
            at += e.window.length + int(PACK_GAP_S * SAMPLE_RATE)
        owners: list[list[Segment]] = [[] for _ in pack]
        doubt = _needs_fallback(d) or _is_silence(d) or d.resume_at is not None
        for s in d.segments:
            touched = [i for i, e in enumerate(pack) if s.start < offsets[i] + e.window.length / SAMPLE_RATE
                       and s.end > offsets[i]]
            if len(touched) != 1:
                doubt = True  # straddles two requests (or lies in a gap): never guess whose words they are
                break
            owners[touched[0]].append(s)
        # every request got text, and none has speech left after its last segment
        doubt = doubt or any(not o for o in owners) or any(
            _speech_after(audio[int(offset * SAMPLE_RATE):int(offset * SAMPLE_RATE) + e.window.length],
                          found[-1].end - offset) for e, offset, found in zip(pack, offsets, owners))
        if doubt:
            self._requeue(pack)
            return
        for e, offset, found in zip(pack, offsets, owners):
            if not e.job.cancelled.is_set():
                e.job.language = e.job.language or d.language
                self._deliver(e, [_to_source(s, e.window, offset) for s in found])

    # --- delivery -----------------------------------------------------------------------------

    def _deliver(self, entry: _Entry, segments: list[Segment]) -> None:
        """Record a window's segments; send every window's segments that are now in order."""
        job = entry.job
        ready: list[Segment] = []
        with self._cond:
            if job.cancelled.is_set():
                return
            job.done[entry.key] = segments
            job.outstanding.discard(entry.key)
            first_missing = min(job.outstanding, default=None)
            for key in sorted(job.done):
                if first_missing is not None and key > first_missing:
                    break
                for s in job.done.pop(key):
                    ready.append(replace(s, id=len(job.segments) + len(ready)))
            job.segments.extend(ready)
        if ready:
            job._post("segments", ready)
        with self._cond:
            self._maybe_finish(job)

    def _maybe_finish(self, job: Job) -> None:
        """Called with the lock held: complete the job when everything is cut and delivered."""
        if not job.cut_all or job.outstanding or job.done or job.result is not None or job.cancelled.is_set():
            return
        job.result = Transcription(
            text="".join(s.text for s in job.segments).strip(), language=job.language or "",
            duration=round(job.audio.seconds, 3), segments=tuple(job.segments), warnings=tuple(job.audio.warnings))
        self._forget(job)
        job._post("done", job.result)

    def _forget(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)


def _pack_audio(pack: list[_Entry]) -> np.ndarray:
    gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for e in pack:
        if parts:
            parts.append(gap)
        parts.append(e.window.audio(e.job.audio))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _speech_after(audio: np.ndarray, seconds: float) -> bool:
    """Whether the VAD hears speech in ``audio`` after ``seconds`` (at least ``MIN_TAIL_SPEECH_S`` of it)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    tail = audio[int(max(seconds, 0.0) * SAMPLE_RATE):]
    if len(tail) < MIN_TAIL_SPEECH_S * SAMPLE_RATE:
        return False
    found = get_speech_timestamps(tail, VadOptions(speech_pad_ms=0))
    return sum(r["end"] - r["start"] for r in found) >= MIN_TAIL_SPEECH_S * SAMPLE_RATE


def _needs_fallback(d: Decoded) -> bool:
    return (d.compression_ratio > COMPRESSION_RATIO_THRESHOLD or d.avg_logprob < LOGPROB_THRESHOLD) \
        and not _is_silence(d)


def _is_silence(d: Decoded) -> bool:
    return d.no_speech_prob > NO_SPEECH_THRESHOLD and d.avg_logprob < LOGPROB_THRESHOLD


def _better(current: Optional[Decoded], new: Decoded) -> Decoded:
    """Whisper keeps the last temperature's result; we keep the best one that is not a loop."""
    if current is None:
        return new
    rank = lambda d: (d.compression_ratio <= COMPRESSION_RATIO_THRESHOLD, d.avg_logprob)  # noqa: E731
    return new if rank(new) > rank(current) else current


def _to_source(s: Segment, window: Window, offset: float) -> Segment:
    """A segment timed in an engine window (``offset`` into it for a packed window) -> request time."""
    at = lambda t: round(window.source_time(max(0.0, t - offset)), 3)  # noqa: E731
    words = None if s.words is None else tuple(replace(w, start=at(w.start), end=at(w.end)) for w in s.words)
    return replace(s, start=at(s.start), end=max(at(s.start), at(s.end)), words=words)


def _shift(s: Segment, offset: float) -> Segment:
    shift: Callable[[float], float] = lambda t: round(t + offset, 3)  # noqa: E731
    words = None if s.words is None else tuple(replace(w, start=shift(w.start), end=shift(w.end))
                                               for w in s.words)
    return replace(s, start=shift(s.start), end=shift(s.end), words=words)


__all__ = ["Job", "Scheduler", "SchedulerConfig", "Word"]
