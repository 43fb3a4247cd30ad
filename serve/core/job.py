"""One request inside the scheduler: its audio, its windows, and what its reader receives, in order.

A ``Job`` is written by the scheduler's threads (decode, cut, inference) and
read by the request's thread through ``events``. Windows are decoded in any
order and by several engine calls; ``deliver`` hands their segments to the
reader strictly in the audio's order, as soon as every earlier window is
done (what streaming sends).

The request's scratch folder holds its body and decoded audio. Its reader
gives it up with ``release`` when the answer is complete or abandoned; the
folder is removed only once nothing of the scheduler reads it any more
(``hold``/``drop``): a client that leaves mid-batch never pulls audio from
under an engine call that its batch mates share.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import RequestTimeoutError
from .audio import AudioFile
from .options import Options
from .results import Segment, Transcription
from .segments import Window

POLL_S = 0.5
"""How often a waiting reader runs its ``poll`` (a client that left is noticed this fast)."""


class SpeechFound:
    """Speech regions (unpadded [start, end) samples), in order, from the job's cutter to one reader."""

    def __init__(self) -> None:
        self._regions: deque[tuple[int, int]] = deque()
        self._closed = False
        self._changed = threading.Condition()

    def add(self, regions: list[tuple[int, int]]) -> None:
        with self._changed:
            self._regions.extend(regions)
            self._changed.notify_all()

    def close(self) -> None:
        """The cutter has stopped: every region is in (or it stopped early, and the request says why)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def take(self, timeout: float) -> tuple[list[tuple[int, int]], bool]:
        """(the regions added since the last take, waiting up to ``timeout`` for one; whether that was all)."""
        with self._changed:
            self._changed.wait_for(lambda: self._regions or self._closed, timeout)
            regions = list(self._regions)
            self._regions.clear()
            return regions, self._closed


@dataclass(order=True)
class Entry:
    """One window of one request, on its way to the engine."""

    key: tuple
    """Order within the request: (k,) from the cutter, (k, 1) for what is left of (k,) after an early stop."""
    window: Window = field(compare=False)
    job: "Job" = field(compare=False)
    solo: bool = field(default=False, compare=False)
    """Decode on its own, never packed or batched with another request (after a doubtful packed
    decode, or after an engine error in its batch)."""


class Job:
    """One request in the scheduler: its audio, its windows in flight, and what its reader receives."""

    _ids = itertools.count(1)

    def __init__(self, source: Path, scratch: Path, options: Options, urgent: bool = False,
                 speech: bool = False):
        self.id = next(self._ids)
        self.source = source
        self.options = options
        self.audio = AudioFile(scratch / "audio.pcm")
        self.submitted = time.monotonic()
        self.started: Optional[float] = None
        """When the engine first took one of its windows."""
        self.first_call: Optional[int] = None
        """The number of the engine call that first took one of its windows."""
        self.last_turn: float = 0
        """The number of the last engine call this request was the head of. Until its first, just under the
        number of the call in flight when it arrived (``Scheduler.submit``): it goes before the request that
        call served, after every request that has waited longer."""
        self.speech: Optional[SpeechFound] = SpeechFound() if speech and options.vad_filter else None
        """With ``speech`` (a diarized request whose engine reads them), the speech regions the cutter's VAD
        finds, for the diarization's thread: the VAD runs once per request. None without the VAD."""
        self.urgent = urgent
        """A live turn's last pass: the words its speaker is waiting for (``batching.next_call``)."""
        self.language: Optional[str] = options.decode.language
        self.queue: deque[Entry] = deque()
        self.outstanding: set[tuple] = set()
        """Keys of the windows not yet delivered (queued or in the engine)."""
        self.done: dict[tuple, list[Segment]] = {}
        self.cut_all = False
        self.segments: list[Segment] = []
        self.prompt_from = 0
        """Sequential requests: the segments from here on are the next window's prompt (Whisper
        resets it after a window that needed a high temperature)."""
        self.cancelled = threading.Event()
        self.error: Optional[BaseException] = None
        self.result: Optional[Transcription] = None
        self._events: "deque[tuple[str, object]]" = deque()
        self._event = threading.Condition()
        self._holds = 0
        self._on_release: list[Callable[[], None]] = []
        self._released = False

    @property
    def finished(self) -> bool:
        return self.result is not None or self.cancelled.is_set()

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

    def release(self, cleanup: Callable[[], None]) -> None:
        """The reader is done with this job: run ``cleanup`` (remove its files) once nothing reads them."""
        with self._event:
            self._released = True
            self._on_release.append(cleanup)
            if self._holds:
                return
            callbacks, self._on_release = self._on_release, []
        for callback in callbacks:
            callback()

    # --- what the scheduler's threads write ---------------------------------------------------

    def hold(self) -> None:
        """A thread of the scheduler starts reading this job's files (decoding, cutting, an engine call)."""
        with self._event:
            self._holds += 1

    def drop(self) -> None:
        with self._event:
            self._holds -= 1
            if self._holds or not self._released:
                return
            callbacks, self._on_release = self._on_release, []
        for callback in callbacks:
            callback()

    def post(self, kind: str, value: object) -> None:
        with self._event:
            self._events.append((kind, value))
            self._event.notify_all()

    def deliver(self, key: tuple, segments: list[Segment]) -> list[Segment]:
        """Record a window's segments; returns every segment now in order (not yet sent). Caller holds the lock."""
        self.done[key] = segments
        self.outstanding.discard(key)
        first_missing = min(self.outstanding, default=None)
        ready: list[Segment] = []
        for k in sorted(self.done):
            if first_missing is not None and k > first_missing:
                break
            for s in self.done.pop(k):
                ready.append(replace(s, id=len(self.segments) + len(ready)))
        self.segments.extend(ready)
        return ready

    def complete(self) -> Optional[Transcription]:
        """The transcription, if everything is cut and delivered (once). Caller holds the lock."""
        if not self.cut_all or self.outstanding or self.done or self.finished:
            return None
        self.result = Transcription(
            text="".join(s.text for s in self.segments).strip(), language=self.language or "",
            duration=round(self.audio.seconds, 3), segments=tuple(self.segments),
            warnings=tuple(self.audio.warnings))
        return self.result

    def previous_text(self) -> str:
        """The prompt of a sequential request's next window: its initial prompt, then its text so far."""
        text = "".join(s.text for s in self.segments[self.prompt_from:])
        if self.prompt_from == 0 and self.options.decode.initial_prompt:
            text = " " + self.options.decode.initial_prompt.strip() + text
        return text[-PROMPT_CHARS:]


PROMPT_CHARS = 2000
"""Previous text kept for a sequential window's prompt: the engines keep its last 223 tokens
(half of Whisper's text context), which English text fills in about 1000 characters."""
