"""A live session's turns, passes and events, with a scripted transcriber (no engine, no socket).

The transcriber answers each pass with the first words of a fixed text, two
words per second of audio, so what each pass says is known. Nothing is
timed: the tests wait for events, and count passes.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from serve.core.results import Segment, Transcription
from serve.errors import EngineFaultError
from serve.live import session as session_module
from serve.live.protocol import SessionConfig
from serve.live.session import LiveLimits, LiveSession, SessionClosing
from serve.live.turns import TurnEvent
from tests.core.injection import wait_until

RATE = 16000
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split() * 4
MANUAL = SessionConfig(turn_detection=None)


class Scripted:
    """Two words per second of audio; optionally held at a gate; counts calls and concurrency."""

    def __init__(self, words_per_s: float = 2.0):
        self.calls: list[int] = []
        self.last: list[bool] = []
        self.prompts: list = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.cancelled_seen = threading.Event()
        self.words_per_s = words_per_s
        self._lock = threading.Lock()

    def __call__(self, samples, options, cancelled, last=False):
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.calls.append(len(samples))
            self.last.append(last)
            self.prompts.append(options.initial_prompt)
        try:
            while not self.gate.wait(0.05):
                if cancelled.is_set():
                    self.cancelled_seen.set()
                    raise RuntimeError("cancelled")
            n = int(len(samples) / RATE * self.words_per_s)
            text = " ".join(WORDS[:n])
            seconds = len(samples) / RATE
            return Transcription(text=text, language="en", duration=seconds,
                                 segments=(Segment(id=0, start=0.0, end=seconds, text=" " + text),) if n else ())
        finally:
            with self._lock:
                self.in_flight -= 1


class Events:
    def __init__(self):
        self.items: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, event: dict) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.items if e["type"] == kind]

    def wait_for(self, kind: str, count: int = 1) -> list[dict]:
        wait_until(lambda: len(self.of(kind)) >= count, what=f"{count} {kind} event(s)")
        return self.of(kind)


COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def _audio(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(int(seconds * RATE)) * 1000).astype(np.int16)


def _feed(session: LiveSession, audio: np.ndarray, frame_ms: int = 100, between=None) -> None:
    frame = frame_ms * RATE // 1000
    for i in range(0, len(audio), frame):
        session.append(audio[i:i + frame])
        if between is not None:
            between()


def _idle(session: LiveSession):
    """For ``_feed``'s ``between``: wait until the session has no pass running or queued."""
    return lambda: wait_until(lambda: session._running is None and not session._queue)


@pytest.fixture
def sessions(monkeypatch):
    monkeypatch.setattr(session_module, "_clock", lambda: 0.0)  # every pass quick: ``min_pass_s`` paces them
    made: list[LiveSession] = []
    yield made
    for s in made:
        s.abort()


def _session(sessions, transcribe, events, config=MANUAL, **limits) -> LiveSession:
    s = LiveSession(config, transcribe, events, LiveLimits(**limits))
    sessions.append(s)
    return s


def test_words_arrive_as_deltas_before_the_commit_and_the_completed_text_is_the_deltas_joined(sessions):
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events)
    idle = _idle(session)
    _feed(session, _audio(6), between=idle)
    assert events.of(DELTA), "no delta before the turn ended"
    session.commit()
    done = events.wait_for(COMPLETED)[0]
    deltas = [e for e in events.of(DELTA) if e["item_id"] == done["item_id"]]
    assert "".join(e["delta"] for e in deltas) == done["transcript"] == " ".join(WORDS[:12])
    assert [e["type"] for e in events.items].index("input_audio_buffer.committed") < \
        [e["type"] for e in events.items].index(COMPLETED)
    # only the turn's last pass asks the scheduler to go first (an urgent request)
    assert len(fake.last) >= 3 and fake.last[-1] and not any(fake.last[:-1]), fake.last


def test_each_pass_is_prompted_with_the_sessions_last_words_after_the_clients_prompt(sessions):
    """Whisper reads a turn better with the words before it (README, live numbers): every pass of a turn
    gets the session's transcript so far, its last ``context_chars`` from a word's start, after the
    client's own prompt."""
    events, fake = Events(), Scripted()
    config = replace(MANUAL, options=replace(MANUAL.options, initial_prompt="Names: Zulu."))
    session = _session(sessions, fake, events, config, context_chars=30)
    _feed(session, _audio(3))
    session.commit()
    events.wait_for(COMPLETED)
    first = len(fake.prompts)
    assert set(fake.prompts) == {"Names: Zulu."}, "the first turn has no words before it"
    for n in range(2, 4):
        _feed(session, _audio(4))
        session.commit()
        events.wait_for(COMPLETED, n)
    said = " ".join(e["transcript"] for e in events.of(COMPLETED)[:2])  # before the third turn
    third = fake.prompts[-1]
    assert third.startswith("Names: Zulu. ") and said.endswith(third[len("Names: Zulu. "):])
    assert len(third) - len("Names: Zulu. ") <= 30 and third[len("Names: Zulu. "):].split()[0] in WORDS
    assert all(p.startswith("Names: Zulu. ") and len(p) > len("Names: Zulu. ") for p in fake.prompts[first:])


def test_a_session_never_has_two_passes_in_flight(sessions):
    events, fake = Events(), Scripted()
    fake.gate.clear()
    session = _session(sessions, fake, events)
    _feed(session, _audio(5))
    session.commit()
    _feed(session, _audio(5))
    wait_until(lambda: fake.in_flight == 1)
    assert len(fake.calls) == 1  # the rest waits behind the first
    fake.gate.set()
    events.wait_for(COMPLETED)
    session.commit()
    events.wait_for(COMPLETED, 2)
    assert fake.most_in_flight == 1


def test_a_turns_end_gives_up_its_interim_pass_so_the_last_pass_goes_at_once(sessions):
    """The interim pass still in the scheduler when its turn ends would only delay the last pass (one pass at a
    time): it is cancelled, says nothing (no failed event, no delta), and the last pass gives every word."""
    events, fake = Events(), Scripted()
    fake.gate.clear()
    session = _session(sessions, fake, events)
    _feed(session, _audio(2))
    wait_until(lambda: fake.in_flight == 1)  # an interim pass, held in the "scheduler"
    session.commit()
    wait_until(fake.cancelled_seen.is_set, what="the interim pass cancelled")
    fake.gate.set()
    done = events.wait_for(COMPLETED)[0]
    assert done["transcript"] == " ".join(WORDS[:4])
    assert fake.calls == [RATE, 2 * RATE], "the interim pass (1 s), then the last pass (2 s)"
    assert not events.of("conversation.item.input_audio_transcription.failed")
    assert "".join(e["delta"] for e in events.of(DELTA)) == done["transcript"]


class Pausing:
    """A ``TurnDetector`` stand-in: a turn from the first sample, ``pausing`` as the test says."""

    speaking = True

    def __init__(self):
        self.pausing = False
        self._started = False

    def feed(self, samples):
        started, self._started = self._started, True
        return [] if started else [TurnEvent("started", 0)]

    def quietest(self, start, end):
        return end

    def forget_before(self, sample):
        pass


def test_a_speaker_who_pauses_gets_no_interim_pass_until_speech_goes_on(sessions):
    """The turn's last pass is due soon after a speaker stops: an interim pass then would only hold the engine."""
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events, config=SessionConfig())
    session._detector = detector = Pausing()
    idle = _idle(session)
    _feed(session, _audio(2), between=idle)
    assert session.passes == 2
    detector.pausing = True
    _feed(session, _audio(3), between=idle)
    assert session.passes == 2, "no pass while the speaker is quiet"
    detector.pausing = False
    _feed(session, _audio(0.1), between=idle)
    assert session.passes == 3, "the held pass goes with the next frame of speech"


def test_when_passes_take_long_the_next_waits_for_that_much_more_audio(sessions, monkeypatch):
    """``busy_factor``: a pass that took 1.5 s (a busy engine) is followed by one after 3 s of new audio, not 1 s;
    quick passes keep ``min_pass_s``, and so does a turn's first pass. The clock is counted, one tick a
    reading: no wall time."""
    ticks = iter(range(1000))
    monkeypatch.setattr(session_module, "_clock", lambda: 1.5 * next(ticks))  # every pass "takes" 1.5 s
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events)
    idle = _idle(session)
    _feed(session, _audio(10), between=idle)
    assert fake.calls == [RATE, 4 * RATE, 7 * RATE, 10 * RATE]
    monkeypatch.setattr(session_module, "_clock", lambda: 0.0)  # quick passes from now on
    _feed(session, _audio(4), between=idle)
    assert fake.calls[4:] == [13 * RATE, 14 * RATE], "3 s after the last slow one, then every second"
    monkeypatch.setattr(session_module, "_clock", lambda: 1.5 * next(ticks))  # slow again
    session.commit()  # its last pass "takes" 1.5 s
    events.wait_for(COMPLETED)
    before = len(fake.calls)
    _feed(session, _audio(5), between=idle)
    assert fake.calls[before:] == [RATE, 4 * RATE], "a new turn's first pass after min_pass_s all the same"


def test_silence_gives_no_delta_and_no_text(sessions):
    events, fake = Events(), Scripted(words_per_s=0)
    session = _session(sessions, fake, events)
    _feed(session, np.zeros(20 * RATE // 2, np.int16))
    session.commit()
    assert events.wait_for(COMPLETED)[0]["transcript"] == ""
    assert not events.of(DELTA)


def test_a_turn_at_its_longest_is_committed_without_the_client_and_the_speech_goes_on_in_the_next(sessions):
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events, max_turn_s=4.0)
    _feed(session, _audio(10))
    assert len(events.wait_for(COMPLETED, 2)) >= 2
    session.commit()
    completed = events.wait_for(COMPLETED, 3)
    assert len({e["item_id"] for e in completed}) == len(completed)
    heard = sum(len(e["transcript"].split()) for e in completed)
    assert heard == pytest.approx(20, abs=len(completed))  # every second is in exactly one turn


def test_commit_with_nothing_buffered_is_an_error_and_the_session_goes_on(sessions):
    from serve.live.protocol import ProtocolError

    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events)
    with pytest.raises(ProtocolError) as err:
        session.commit()
    assert err.value.code == "input_audio_buffer_commit_empty"
    _feed(session, _audio(2))
    session.commit()
    assert events.wait_for(COMPLETED)[0]["transcript"] == " ".join(WORDS[:4])


def test_a_client_that_leaves_frees_its_queued_passes_and_cancels_the_one_in_the_scheduler(sessions):
    events, fake = Events(), Scripted()
    fake.gate.clear()
    session = _session(sessions, fake, events)
    _feed(session, _audio(3))
    session.commit()
    _feed(session, _audio(3))
    session.commit()
    wait_until(lambda: fake.in_flight == 1)
    session.abort()
    assert fake.cancelled_seen.wait(10)
    assert not session._queue
    assert len(fake.calls) == 1 and not events.of(COMPLETED)


def test_a_session_that_falls_behind_is_warned_then_closed_and_its_queue_stays_bounded(sessions):
    events, fake = Events(), Scripted()
    fake.gate.clear()
    session = _session(sessions, fake, events, max_pending=2)
    with pytest.raises(SessionClosing) as closing:
        for _ in range(10):
            _feed(session, _audio(1))
            session.commit()
    assert closing.value.code == 1013 and closing.value.error_code == "session_lagging"
    assert sum(p.final for p in session._queue) == 3  # max_pending + the one that closed it: never more


def test_a_last_pass_that_fails_is_a_failed_event_not_a_completed_one(sessions):
    events = Events()

    def broken(samples, options, cancelled, last):
        raise EngineFaultError("the engine failed on this request's audio")

    session = _session(sessions, broken, events)
    _feed(session, _audio(2))
    session.commit()
    failed = events.wait_for("conversation.item.input_audio_transcription.failed")[0]
    assert "the engine failed" in failed["error"]["message"] and failed["error"]["code"] == "engine_error"
    assert not events.of(COMPLETED) and not events.of(DELTA)


def test_finish_commits_the_open_turn_and_waits_for_its_completed(sessions):
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events)
    _feed(session, _audio(3))
    assert session.finish(timeout=60)
    assert events.of(COMPLETED)[0]["transcript"] == " ".join(WORDS[:6])


def test_segments_are_timed_from_the_sessions_start(sessions):
    events, fake = Events(), Scripted()
    session = _session(sessions, fake, events, config=replace(MANUAL, segments=True))
    _feed(session, _audio(2))
    session.commit()
    events.wait_for(COMPLETED)
    _feed(session, _audio(3))
    session.commit()
    second = events.wait_for(COMPLETED, 2)[1]
    assert second["segments"][0]["start"] == pytest.approx(2.0) and second["segments"][0]["end"] == pytest.approx(5.0)


def test_a_cleared_turn_sends_nothing_more_and_the_next_turn_is_its_own(sessions):
    events, fake = Events(), Scripted()
    fake.gate.clear()
    session = _session(sessions, fake, events)
    _feed(session, _audio(3))
    wait_until(lambda: fake.in_flight == 1)  # a pass over the turn to be cleared is in the engine
    session.clear()
    fake.gate.set()
    _feed(session, _audio(2))
    session.commit()
    done = events.wait_for(COMPLETED)
    assert [e["type"] for e in events.items][0] == "input_audio_buffer.cleared"
    assert len(done) == 1 and done[0]["transcript"] == " ".join(WORDS[:4])
    assert {e["item_id"] for e in events.of(DELTA)} <= {done[0]["item_id"]}
