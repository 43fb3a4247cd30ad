"""One live session: audio in, OpenAI transcription events out, every pass through the scheduler.

The audio is cut into turns: by the server VAD (``turns``), by the client's
``commit``, or at about ``max_turn_s`` (at the quietest step of its last
third, so a word is rarely cut). While a turn is open its audio so far is
decoded again each time ``min_pass_s`` more has arrived; words two passes
agree on are sent as deltas (``agreement``). When the turn ends, one last
pass gives the rest of its words and the ``completed`` event. Every pass is
prompted with the session's last words before the turn (after the client's
own prompt), as Whisper prompts each 30 s window of a file with the text
before it: a turn decoded alone, without them, misreads more words.

A session has at most one pass in the scheduler at a time, so N sessions
put at most N windows into the engine's batches, beside the file requests.
A pass is a short request like any other (``transcribe``, the layer above:
the runtime's scheduler). The audio kept is bounded: the open turn, and the
turns waiting for their last pass, which are at most ``max_pending``.

Most words come with their turn's last pass (speech between pauses is a few
seconds: two interim passes rarely agree on much before it ends), so what
makes live words late under load is the last pass waiting for the engine.
Interim passes are spent where they can commit words: none while the speaker
pauses (the last pass is due), and fewer when passes are slow
(``busy_factor``). Left out: trimming the decoded audio at committed words
(every window is padded to 30 s for the encoder, so a pass costs about the
same however short, and turns are mostly a few seconds), and committing the
words one pass has ending well before its end (tried: word times make the
engine decode the rest of the window again after the last word, a second
window per pass, and read "Thank you." into a turn's trailing silence).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Protocol

import numpy as np

from ..core.options import TranscribeOptions
from ..core.results import Segment, Transcription
from ..metrics import record as metrics
from . import protocol
from .agreement import Agreement, joined
from .protocol import SessionConfig
from .turns import SAMPLE_RATE, TurnDetector

log = logging.getLogger(__name__)

_clock = time.monotonic
"""How long a pass takes (tests replace it: they count, never time)."""


class Transcribe(Protocol):
    """Decode 16 kHz int16 ``samples`` with ``options``; raise if ``cancelled`` is set meanwhile. ``last``: the
    turn's last pass, which the scheduler serves first (an urgent request)."""

    def __call__(self, samples: np.ndarray, options: TranscribeOptions,
                 cancelled: threading.Event, last: bool) -> Transcription: ...


@dataclass(frozen=True)
class LiveLimits:
    max_turn_s: float = 15.0
    """A turn this long is committed (a forced cut), and the next one starts where it was cut."""
    min_pass_s: float = 1.0
    """New audio in an open turn before it is decoded again."""
    busy_factor: float = 2.0
    """... or this many times as long as the session's last pass took (in the scheduler, waiting included), if
    more: when the engine is busy, passes back to back would each bring one pass's worth of audio, most of it
    undecided words, and keep the engine busy for every session's last passes, which give most of the words
    (0: ``min_pass_s`` only). Not for a turn's first pass: the words of a long turn's first seconds are
    committed once a second pass agrees with it, and held back it left them all for the turn's last pass."""
    lag_warn_s: float = 10.0
    """A turn waiting this long for its last pass: the client is warned that the session falls behind."""
    lag_close_s: float = 30.0
    """... this long: the session is closed with 1013 (Try Again Later)."""
    max_pending: int = 4
    """Turns waiting for their last pass: one more closes the session (1013)."""
    context_chars: int = 200
    """The session's last words before a turn that prompt its passes (whisper_streaming's 200 characters:
    enough for the decoder to follow the speech on; Whisper keeps at most 223 tokens)."""


class SessionClosing(Exception):
    """The session must end: ``code`` is the WebSocket close code, after an ``error`` event with ``reason``."""

    def __init__(self, code: int, error_code: str, message: str):
        super().__init__(message)
        self.code, self.error_code, self.message = code, error_code, message


@dataclass
class _Turn:
    item_id: str
    start: int
    """First sample, from the session's start."""
    agreement: Agreement = field(default_factory=Agreement)
    decoded_to: int = 0
    """The end of the audio its last pass decoded (a new pass waits for ``min_pass_s`` beyond)."""
    sent: bool = False
    dropped: bool = False
    """Cleared by the client before it ended: what its passes say is not sent."""


@dataclass
class _Pass:
    turn: _Turn
    samples: np.ndarray
    final: bool
    queued: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the session ends, or (an interim pass) when its turn ends: the last pass supersedes it."""


class LiveSession:
    """The state of one stream. ``append``/``commit``/``clear``/``update`` come from the socket's reader;
    a thread of its own runs the passes; ``send`` is called from both (it must be thread-safe)."""

    _numbers = itertools.count(1)

    def __init__(self, config: SessionConfig, transcribe: Transcribe, send: Callable[[dict], None],
                 limits: LiveLimits = LiveLimits()):
        self.id = protocol.new_id("sess")
        self.config = config
        self.limits = limits
        self._transcribe = transcribe
        self._send = send
        self._cond = threading.Condition()
        self._detector = self._new_detector(config)
        self._buffer = np.zeros(0, np.int16)
        self._origin = 0
        """The sample (from the session's start) that ``_buffer[0]`` is."""
        self._turn: Optional[_Turn] = None
        self._previous_item: Optional[str] = None
        self._context = ""
        """The end of the session's transcript so far (``context_chars``): the prompt of the next passes."""
        self._last_end = 0
        """Where the last turn ended: the next one never starts before (no audio is in two turns)."""
        self._queue: deque[_Pass] = deque()
        self._running: Optional[_Pass] = None
        self._cancelled = threading.Event()
        self._warned = False
        self._stopping = False
        self.passes = 0
        """Passes sent to the scheduler so far (tests count them)."""
        self._pass_s = 0.0
        """How long the last pass took, from its start in the scheduler to its result."""
        self._thread = threading.Thread(target=self._run, name=f"live-{next(self._numbers)}", daemon=True)
        self._thread.start()

    # --- from the socket's reader --------------------------------------------------------------

    @property
    def received(self) -> int:
        return self._origin + len(self._buffer)

    def update(self, config: SessionConfig) -> None:
        with self._cond:
            if config.turn_detection != self.config.turn_detection:
                if self._turn is not None:
                    self._end_turn(self.received)
                self._detector = self._new_detector(config)
            self.config = config

    def append(self, samples: np.ndarray) -> None:
        """Audio at 16 kHz (int16). Raises ``SessionClosing`` when the session cannot keep up."""
        for i in range(0, len(samples), SAMPLE_RATE):  # a large frame, a second at a time: turns stay bounded
            self._append(samples[i:i + SAMPLE_RATE])

    def _append(self, samples: np.ndarray) -> None:
        with self._cond:
            start = self.received
            self._buffer = np.concatenate([self._buffer, samples])
            if self._detector is not None:
                for event in self._detector.feed(samples):
                    if event.kind == "started" and self._turn is None:
                        pad = int(self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE / 1000)
                        self._open_turn(max(event.sample - pad, self._origin, self._last_end))
                    elif event.kind == "stopped" and self._turn is not None:
                        self._send(protocol.speech_stopped(self._turn.item_id, _ms(event.sample)))
                        self._end_turn(self.received)
            elif self._turn is None:
                self._open_turn(start)
            turn = self._turn
            if turn is not None and self.received - turn.start >= self.limits.max_turn_s * SAMPLE_RATE:
                self._cut(turn)
            self._schedule()
            self._trim()
            self._check_lag()

    def commit(self) -> None:
        """The client ends the turn now. Nothing buffered: an ``input_audio_buffer_commit_empty`` error."""
        with self._cond:
            if self._turn is None or self.received <= self._turn.start:
                raise protocol.ProtocolError("input_audio_buffer_commit_empty",
                                             "there is no audio to commit: nothing was said since the last commit")
            self._end_turn(self.received)
            self._check_lag()

    def clear(self) -> None:
        """The client drops the open turn's audio (what has already been sent as deltas stays sent)."""
        with self._cond:
            if self._turn is not None:
                self._turn.dropped = True
                self._queue = deque(p for p in self._queue if p.turn is not self._turn)
            self._turn = None
            self._buffer, self._origin = np.zeros(0, np.int16), self.received
            self._last_end = self.received
            if self._detector is not None:
                self._detector = self._new_detector(self.config)
        self._send(protocol.cleared())

    def finish(self, timeout: float) -> bool:
        """End the session well: commit the open turn, wait (``timeout``) for every last pass. True if all done."""
        with self._cond:
            if self._turn is not None and self.received > self._turn.start:
                if self._detector is not None:
                    self._send(protocol.speech_stopped(self._turn.item_id, _ms(self.received)))
                self._end_turn(self.received)
            self._turn = None
            self._stopping = True
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: not self._queue and self._running is None, timeout)
        self.abort()
        return done

    def abort(self) -> None:
        """The client is gone: drop the queued passes and cancel the one in the scheduler, at once."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cancelled.set()
            if self._running is not None:
                self._running.cancelled.set()
            self._cond.notify_all()

    # --- turns -------------------------------------------------------------------------------------

    def _new_detector(self, config: SessionConfig) -> Optional[TurnDetector]:
        td = config.turn_detection
        return None if td is None else TurnDetector(td.threshold, td.silence_duration_ms)

    def _open_turn(self, start: int) -> None:
        self._turn = _Turn(protocol.new_id("item"), start, decoded_to=start)
        if self._detector is not None:
            self._send(protocol.speech_started(self._turn.item_id, _ms(start)))

    def _end_turn(self, end: int) -> None:
        """The open turn ends at ``end``: committed, and its last pass queued."""
        turn, self._turn = self._turn, None
        self._last_end = end
        if self._running is not None and self._running.turn is turn and not self._running.final:
            # Its words would come no sooner than the last pass's, which waits for it: give up its place.
            self._running.cancelled.set()
        self._send(protocol.committed(turn.item_id, self._previous_item))
        self._previous_item = turn.item_id
        self._queue.append(_Pass(turn, self._samples(turn.start, end), final=True))
        self._cond.notify_all()

    def _cut(self, turn: _Turn) -> None:
        """A turn at ``max_turn_s``: commit it at its quietest moment late in it; the speech goes on in a new turn."""
        late = turn.start + int(self.limits.max_turn_s * SAMPLE_RATE * 2 / 3)
        at = self._detector.quietest(late, self.received) if self._detector is not None else self.received
        self._end_turn(at)
        if self._detector is None or self._detector.speaking:
            self._open_turn(at)

    # --- passes ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Queue a pass over the open turn if the session has none in flight and enough new audio arrived."""
        turn = self._turn
        if turn is None or self._queue or self._running is not None or self._stopping:
            return
        due = self.limits.min_pass_s
        if turn.decoded_to > turn.start:  # a turn's first pass is never held back: see ``busy_factor``
            due = max(due, self.limits.busy_factor * self._pass_s)
        if self.received - turn.decoded_to < due * SAMPLE_RATE:
            return
        if self._detector is not None and self._detector.pausing:
            # The speaker has stopped: the turn's last pass is due within the rest of ``silence_duration_ms``
            # and says all an interim pass would. One started now would hold the engine (and, under load,
            # the other sessions' passes) just as the last pass arrives. Speech again: the pass goes then.
            return
        turn.decoded_to = self.received
        self._queue.append(_Pass(turn, self._samples(turn.start, self.received), final=False))
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._cancelled.is_set())
                if self._cancelled.is_set():
                    return
                job = self._running = self._queue.popleft()
                self.passes += 1
                options = self._prompted(self.config.options)
            if not (job.final and self.config.segments):
                options = replace(options, word_timestamps=None)  # times are only sent on ``completed``
            started = _clock()
            try:
                result: Optional[Transcription] = self._transcribe(job.samples, options, job.cancelled, job.final)
                error = None
            except Exception as exc:  # noqa: BLE001 - told to the client for a last pass; an interim one is retried
                result, error = None, exc
            with self._cond:
                self._running = None
                if not job.cancelled.is_set():  # a cancelled pass ends early: it says nothing of the engine
                    self._pass_s = _clock() - started
                if not self._cancelled.is_set():
                    self._passed(job, result, error)
                    self._schedule()
                self._cond.notify_all()

    def _passed(self, job: _Pass, result: Optional[Transcription], error: Optional[Exception]) -> None:
        turn = job.turn
        if turn.dropped or job.cancelled.is_set():
            return
        if error is not None:
            log.warning("live session %s: a %s pass of %s failed: %s", self.id,
                        "last" if job.final else "", turn.item_id, error)
            if job.final:
                self._send(protocol.failed(turn.item_id, error))
            return
        if not job.final:
            new = turn.agreement.passed(result.text)
            if new:
                self._send(protocol.delta(turn.item_id, joined(new, first=not turn.sent)))
                turn.sent = True
            if self.config.partials:
                self._send(protocol.partial(turn.item_id, joined(turn.agreement.tail(), first=not turn.sent)))
            return
        new = turn.agreement.final(result.text)
        if new:
            self._send(protocol.delta(turn.item_id, joined(new, first=not turn.sent)))
            turn.sent = True
        segments = None
        if self.config.segments:
            segments = [_shifted(s, turn.start / SAMPLE_RATE) for s in result.segments]
        transcript = " ".join(turn.agreement.committed)
        self._context = _tail(f"{self._context} {transcript}", self.limits.context_chars)
        self._send(protocol.completed(turn.item_id, transcript, segments,
                                      audio_seconds=len(job.samples) / SAMPLE_RATE))

    def _prompted(self, options: TranscribeOptions) -> TranscribeOptions:
        """``options`` with the session's last words after the client's prompt (if any)."""
        if not self._context:
            return options
        return replace(options, initial_prompt=" ".join(filter(None, [options.initial_prompt, self._context])))

    # --- bounds ------------------------------------------------------------------------------------

    def _samples(self, start: int, end: int) -> np.ndarray:
        return self._buffer[max(0, start - self._origin):max(0, end - self._origin)].copy()

    def _trim(self) -> None:
        """Keep only the open turn's audio, or the prefix padding before a turn can start."""
        if self._turn is not None:
            keep = self._turn.start
        else:
            td = self.config.turn_detection
            pad = int(td.prefix_padding_ms * SAMPLE_RATE / 1000) if td is not None else 0
            keep = self.received - pad - 2 * SAMPLE_RATE  # the VAD reports a start a little after it
        drop = keep - self._origin
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._origin = keep
            if self._detector is not None:
                self._detector.forget_before(keep - int(self.limits.max_turn_s * SAMPLE_RATE))

    @property
    def lag_seconds(self) -> float:
        """How long the oldest ended turn has waited for its last pass (0: none waiting). Read by the worker's
        admission too, from another thread: under the lock (reentrant), as the pass thread changes the queue."""
        with self._cond:
            waiting = [p.queued for p in [self._running, *self._queue] if p is not None and p.final]
        return time.monotonic() - min(waiting) if waiting else 0.0

    def _check_lag(self) -> None:
        lag = self.lag_seconds
        pending = sum(p.final for p in self._queue)
        if lag > self.limits.lag_close_s or pending > self.limits.max_pending:
            if not self._warned:  # a session counts as lagging once, warned or closed for it
                self._warned = True
                metrics.live_lagging()
            raise SessionClosing(1013, "session_lagging",
                                 f"this session fell {lag:.0f} s behind real time ({pending} turns waiting): the "
                                 "server is over capacity; reconnect later or to another instance")
        if lag > self.limits.lag_warn_s and not self._warned:
            self._warned = True
            metrics.live_lagging()
            self._send(protocol.error_event(protocol.ProtocolError(
                "session_falling_behind",
                f"transcription is {lag:.0f} s behind this session's audio; past {self.limits.lag_close_s:.0f} s "
                "the session is closed (1013)", error_type="server_error")))


def _tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text``, from a word's start."""
    text = text.strip()
    if chars <= 0:
        return ""
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    return cut[cut.index(" ") + 1:] if text[-chars - 1] != " " and " " in cut else cut


def _ms(sample: int) -> int:
    return int(sample * 1000 // SAMPLE_RATE)


def _shifted(segment: Segment, offset: float) -> Segment:
    """A segment's times (and its words') from the turn's start -> from the session's start."""
    at = lambda t: round(t + offset, 3)  # noqa: E731
    words = None if segment.words is None else tuple(replace(w, start=at(w.start), end=at(w.end))
                                                     for w in segment.words)
    return replace(segment, start=at(segment.start), end=at(segment.end), words=words)
