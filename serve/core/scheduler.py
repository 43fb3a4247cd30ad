"""One scheduler per worker (per GPU): concurrent requests become batched engine calls.

The flow of a request, once its body is on disk:

1. **decode**: a bounded pool of ffmpeg processes turns it into 16 kHz PCM on
   disk (``audio.decode_to_file``), outside the inference thread;
2. **cut**: a thread per request turns the audio into windows of at most 30 s
   as it arrives (``segments.windows``: VAD, or quiet cuts);
3. **batch**: the inference thread takes the next engine call's windows
   (``batching``: requests take turns, equal options batch together,
   sequential requests one window at a time with their previous text) and
   decodes them with Whisper's rules (``decoding``; ``packing`` when on);
4. **deliver**: each window's segments go to its request, in order
   (``job``); the request completes when its last window has.

Faults stay with their request. An engine call that raises is split in
halves and decoded again, so only the window that makes the engine fail
fails its request (``EngineFaultError``); a decoder or cutter that fails is
a ``ServiceFaultError`` (503), never a shorter transcript. A device error,
repeated out-of-memory, a hung call or a dead inference thread make the
engine unhealthy (``health``): every request gets a 503 and /ping says so.

A request that times out or whose client left is cancelled: its ffmpeg is
stopped and its windows are dropped before they reach the engine; its files
stay until the engine call that reads them is over.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import CancelledError, EngineFaultError, ServiceFaultError, ShuttingDownError, WhisperServeError
from ..metrics import record as metrics
from .audio import decode_to_file
from .batching import Call, next_call
from .decoding import PROMPT_RESET_TEMPERATURE, decode_with_fallback, is_silence, stopped_at
from .engine import Decoded, Engine
from .health import Health, is_out_of_memory
from .job import Entry, Job
from .options import DecodeOptions, Options
from .packing import pack_audio, unpack
from .results import Segment
from .segments import Window, windows

log = logging.getLogger(__name__)

Item = tuple[list[Entry], list[np.ndarray], Optional[str]]
"""One engine window of a call: its requests' windows (several when packed), their samples, its prompt."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 8
    """Engine windows per engine call (WHISPER_MAX_BATCH)."""
    packing: bool = False
    """Pack short windows of several requests into one engine window (WHISPER_PACKING; opt-in)."""
    decode_workers: int = 4
    """ffmpeg processes decoding at once (WHISPER_DECODE_WORKERS)."""
    max_audio_seconds: float = 0.0
    """Longest audio one request may decode, 0 = no limit (WHISPER_MAX_AUDIO_SECONDS)."""
    engine_timeout_s: float = 600.0
    """An engine call running longer is hung: the engine is unhealthy (WHISPER_ENGINE_TIMEOUT_S)."""


class Scheduler:
    """Owns the engine of one worker: the decode pool, the engine calls and the inference thread."""

    def __init__(self, engine: Engine, config: SchedulerConfig,
                 on_unhealthy: Callable[[str], None] = lambda reason: None):
        self.engine = engine
        self.config = config
        self._on_unhealthy = on_unhealthy
        self._pool = ThreadPoolExecutor(max_workers=config.decode_workers, thread_name_prefix="decode")
        self._vad_slots = threading.Semaphore(config.decode_workers)
        self._jobs: deque[Job] = deque()
        """The requests not finished, oldest first."""
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False
        self._cutters: set[threading.Thread] = set()
        self.calls = 0
        """Engine calls started so far (for tests and logs)."""
        self._after_urgent = False
        """The last engine call took urgent requests first: the next one goes round robin."""
        self._waiting = [0, 0]
        """Windows queued for the engine and their samples, kept as they come and go (the queue gauges)."""
        self.health = Health(config.engine_timeout_s, self._unhealthy)
        metrics.packing(config.packing)
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()
        # Native engine code running in a daemon thread while the interpreter exits crashes it.
        atexit.register(self.stop)

    # --- requests -----------------------------------------------------------------------------

    def submit(self, source: Path, scratch: Path, options: Options, continuing: bool = False,
               urgent: bool = False, speech: bool = False) -> Job:
        """Start decoding ``source`` (it and ``scratch`` must stay until ``Job.release``); returns at once.

        ``continuing``: more work of something already served (a live session's last pass), taken while the
        server drains; the drain's deadline still bounds it. ``urgent``: see ``Job.urgent``. ``speech``: the
        cutter hands its VAD's speech regions to ``Job.speech``."""
        job = Job(source, scratch, options, urgent, speech)
        with self._cond:
            job.last_turn = self.calls - 0.5
            if self._stopped or (self._closing and not continuing):
                raise ShuttingDownError("the server is shutting down; send the request again")
            if not self.health.ok:
                raise ServiceFaultError(f"this worker's engine can no longer serve ({self.health.problem}); "
                                        "send the request again")
            self._jobs.append(job)
            job.hold()  # the decoder
            job.hold()  # the cutter
        try:
            self._pool.submit(self._decode, job)
        except RuntimeError as exc:  # the pool is shut down (exit): nothing will decode it
            job.audio._finish(ShuttingDownError(f"the server stopped ({exc})"))
            job.drop()
        cutter = threading.Thread(target=self._cut, args=(job,), name=f"cut-{job.id}", daemon=True)
        with self._cond:
            self._cutters.add(cutter)
        try:
            cutter.start()
        except RuntimeError as exc:  # no thread to be had (a resource limit): our side, not the request's
            with self._cond:
                self._cutters.discard(cutter)
            self.cancel(job, ServiceFaultError(f"the server could not start work on the request ({exc}); "
                                               "send it again"))
            job.drop()
        return job

    def cancel(self, job: Job, error: Optional[BaseException] = None) -> None:
        """Stop all work for ``job``: its ffmpeg, its queued windows. Its reader gets ``error`` if given."""
        with self._cond:
            if job.finished:
                return
            job.cancelled.set()
            self._queue_changed(job.queue, -1)
            job.queue.clear()
            self._forget(job)
            job.error = error or CancelledError("the request was given up")
            job.post("error", job.error)

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
        self.health.stop()
        for job in jobs:
            self.cancel(job, ShuttingDownError("the server stopped"))
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *cutters]:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _unhealthy(self, reason: str) -> None:
        """The engine can no longer serve: every request gets a 503 now; the owner decides what happens next."""
        with self._cond:
            jobs = list(self._jobs)
            self._cond.notify_all()
        for job in jobs:
            self.cancel(job, ServiceFaultError(f"this worker's engine can no longer serve ({reason}); "
                                               "send the request again"))
        self._on_unhealthy(reason)

    # --- decode and cut (outside the inference thread) ----------------------------------------

    def _decode(self, job: Job) -> None:
        try:
            if job.cancelled.is_set():
                job.audio._finish(CancelledError("the request was given up"))
                return
            started = time.monotonic()
            decode_to_file(job.source, job.audio, self.config.max_audio_seconds, job.cancelled)
            metrics.decoded(time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 - recorded on job.audio; the cutter reports it
            if not job.audio.done:  # the decoder failed before it could say so itself
                job.audio._finish(exc if isinstance(exc, WhisperServeError) else ServiceFaultError(
                    f"the audio decoder failed ({type(exc).__name__}: {exc}); send the request again"))
        finally:
            job.drop()

    def _cut(self, job: Job) -> None:
        try:
            speech = job.speech.add if job.speech is not None else None
            for k, window in enumerate(windows(job.audio, job.options, lambda: self._vad_slots, speech)):
                if job.cancelled.is_set() or job.audio.error is not None:
                    break  # given up, or the decoder failed: what is queued is dropped below
                self._add(job, Entry((k,), window, job))
        except BaseException as exc:  # noqa: BLE001 - our side failed, not the request
            log.exception("cutting request %d failed", job.id)
            self.cancel(job, ServiceFaultError(f"cutting the audio into windows failed ({type(exc).__name__}: "
                                               f"{exc}); nothing was transcribed; send the request again"))
            return
        finally:
            if job.speech is not None:
                job.speech.close()
            with self._cond:
                self._cutters.discard(threading.current_thread())
            job.drop()
        job.audio.wait_for(1 << 62)  # decoding ended (the cutter may stop early on an error)
        error = job.audio.error
        if error is not None and not isinstance(error, CancelledError):
            self.cancel(job, error)
            return
        with self._cond:
            job.cut_all = True
            self._complete(job)

    def _add(self, job: Job, entry: Entry, front: bool = False) -> None:
        """Queue a window that is new to the job (from the cutter, or what is left after an early stop)."""
        with self._cond:
            if job.cancelled.is_set():
                return
            job.outstanding.add(entry.key)
            (job.queue.appendleft if front else job.queue.append)(entry)
            self._queue_changed([entry], +1)
            self._cond.notify_all()

    def _requeue(self, entries: list[Entry]) -> None:
        """Put windows taken for the engine back at the front of their queues, in order, to decode unpacked."""
        with self._cond:
            back = [e for e in sorted(entries, reverse=True) if not e.job.cancelled.is_set()]
            for e in back:
                e.job.queue.appendleft(replace(e, solo=True))
            self._queue_changed(back, +1)
            self._cond.notify_all()

    # --- the inference thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (call := self._take()) is not None:
                try:
                    self._execute(call)
                except Exception as exc:  # noqa: BLE001 - a fault of ours: this call's requests fail, not the rest
                    log.exception("engine call %d failed", call.number)
                    for job in call.jobs:
                        self.cancel(job, exc)
                finally:
                    for job in call.jobs:
                        job.drop()
        except BaseException as exc:  # noqa: BLE001 - reported by /ping; every waiting request gets a 503
            log.exception("the inference thread died")
            self.health.fail(f"the inference thread died ({type(exc).__name__}: {exc})")
        finally:
            if not self._stopped:
                self.health.fail("the inference thread stopped")

    def _take(self) -> Optional[Call]:
        """The next engine call (None: stopped or unhealthy). Its requests' files are held until it ends."""
        with self._cond:
            while True:
                if self._stopped or not self.health.ok:
                    return None
                call = next_call(self._jobs, self.calls + 1, self.config.max_batch, self.config.packing,
                                 self.engine.prompt_per_window, urgent_first=not self._after_urgent)
                if call is not None:
                    break
                self._cond.wait()
            self.calls += 1
            self._after_urgent = call.urgent
            self._queue_changed(call.entries, -1)
            for job in call.jobs:
                job.hold()
                if job.started is None:
                    job.started, job.first_call = time.monotonic(), call.number
            return call

    def _execute(self, call: Call) -> None:
        items = []
        for n, pack in enumerate(call.packs):
            read = [(e, audio) for e in pack if (audio := self._read(e)) is not None]
            if read:
                prompt = call.prompts[n] if call.prompts is not None else None
                items.append(([e for e, _ in read], [audio for _, audio in read], prompt))
        if items:
            self._decode_isolated(call.options, items, call.prompts is not None)

    def _read(self, entry: Entry) -> Optional[np.ndarray]:
        """A window's samples from its request's PCM file; a read that fails fails that request only."""
        if entry.job.cancelled.is_set():
            return None
        try:
            return entry.window.audio(entry.job.audio)
        except OSError as exc:
            self.cancel(entry.job, ServiceFaultError(f"the request's decoded audio could not be read back from the "
                                                     f"scratch disk ({exc.strerror or exc}); send it again"))
            return None

    def _decode_isolated(self, options: DecodeOptions, items: list[Item], prompted: bool = False) -> None:
        """Decode these packs in one engine call (``prompted``: each with its own prompt). If the engine raises,
        decode the halves again, down to single windows, so that only the window that makes it fail fails,
        and only its request."""
        items = [item for item in items if not any(e.job.cancelled.is_set() for e in item[0])]
        if not items:
            return
        arrays = [pack_audio(parts) for _, parts, _ in items]
        packed = [len(pack) > 1 for pack, _, _ in items]
        prompts = [prompt for _, _, prompt in items] if prompted else None
        self.health.call_started()
        started = time.monotonic()
        try:
            decoded = decode_with_fallback(self.engine, arrays, options, [not p for p in packed], any(packed),
                                           prompts)
        except Exception as exc:  # noqa: BLE001 - isolate the culprit below
            self.health.call_ended()
            metrics.engine_call(len(arrays), time.monotonic() - started)
            single = len(items) == 1 and not packed[0]
            self.health.engine_error(exc, single)
            if not self.health.ok:
                return  # every request was failed with the reason
            if single:
                entry = items[0][0][0]
                log.warning("the engine failed on request %d's window %s: %r", entry.job.id, entry.key, exc)
                self.cancel(entry.job, _engine_fault(exc))
            elif len(items) > 1:
                middle = len(items) // 2
                self._decode_isolated(options, items[:middle], prompted)
                self._decode_isolated(options, items[middle:], prompted)
            else:  # one pack of several requests: each alone
                pack, parts, prompt = items[0]
                for entry, part in zip(pack, parts):
                    self._decode_isolated(options, [([entry], [part], prompt)], prompted)
            return
        self.health.call_ended()
        self.health.succeeded()
        metrics.engine_call(len(arrays), time.monotonic() - started)
        for (pack, parts, _), audio, d in zip(items, arrays, decoded):
            if len(pack) == 1:
                self._finish_window(pack[0], audio, d)
            else:
                self._finish_pack(pack, parts, audio, d)

    def _finish_window(self, entry: Entry, audio: np.ndarray, d: Decoded) -> None:
        """One request's window: silence yields nothing; speech left undecoded is decoded again from there."""
        job = entry.job
        if job.cancelled.is_set():
            return
        job.language = job.language or d.language
        if is_silence(d):
            self._deliver(entry, [])
            return
        stop = stopped_at(audio, d)
        if stop is not None and (rest := entry.window.after(stop)) is not None:
            self._add(job, Entry(entry.key + (1,), rest, job, solo=entry.solo), front=True)
        self._deliver(entry, [_to_source(s, entry.window, 0.0) for s in d.segments],
                      reset_prompt=d.temperature > PROMPT_RESET_TEMPERATURE)

    def _finish_pack(self, pack: list[Entry], parts: list[np.ndarray], audio: np.ndarray, d: Decoded) -> None:
        """Several requests in one engine window: each gets its own segments, or is decoded again alone."""
        retry = []
        for entry, mine in zip(pack, unpack([len(p) for p in parts], audio, d)):
            if entry.job.cancelled.is_set():
                continue
            if mine.segments is None:
                retry.append(entry)
                continue
            entry.job.language = entry.job.language or d.language
            self._deliver(entry, [_to_source(s, entry.window, mine.offset_s) for s in mine.segments])
        if retry:
            self._requeue(retry)

    # --- delivery -----------------------------------------------------------------------------

    def _deliver(self, entry: Entry, segments: list[Segment], reset_prompt: bool = False) -> None:
        """Record a window's segments; send every window's segments that are now in order."""
        job = entry.job
        with self._cond:
            if job.cancelled.is_set():
                return
            ready = job.deliver(entry.key, segments)
            if reset_prompt:
                job.prompt_from = len(job.segments)
            if ready:
                job.post("segments", ready)
            self._complete(job)

    def _complete(self, job: Job) -> None:
        """Called with the lock held: complete the job when everything is cut and delivered."""
        result = job.complete()
        if result is not None:
            self._forget(job)
            job.post("done", result)

    def _forget(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def _queue_changed(self, entries, sign: int) -> None:
        """Called with the lock held: ``entries`` joined (+1) or left (-1) the queues; the gauges follow.
        Counted as they move, never summed over every queue: thousands of windows may wait."""
        self._waiting[0] += sign * len(entries)
        self._waiting[1] += sign * sum(e.window.length for e in entries)
        metrics.queue(*self._waiting)


def _engine_fault(exc: BaseException) -> BaseException:
    if is_out_of_memory(exc):
        return ServiceFaultError(f"the engine ran out of memory on this request's audio ({exc}); send it again")
    return EngineFaultError(f"the engine failed on this request's audio ({type(exc).__name__}: {exc}); the requests "
                            "batched with it were decoded again without it")


def _to_source(s: Segment, window: Window, offset: float) -> Segment:
    """A segment timed in an engine window (``offset`` into it for a packed window) -> request time."""
    at = lambda t: round(window.source_time(max(0.0, t - offset)), 3)  # noqa: E731
    words = None if s.words is None else tuple(replace(w, start=at(w.start), end=at(w.end)) for w in s.words)
    return replace(s, start=at(s.start), end=max(at(s.start), at(s.end)), words=words)


__all__ = ["Job", "Scheduler", "SchedulerConfig"]
