"""A metric never fails what it measures: an outlet that raises is logged once and dropped.

Injected where it would hurt: in the request's own thread (``jobs.log``, an
error answer) and in the scheduler's inference thread (engine calls, queue,
decode). Without the guard in ``record._send``, the first answers a 500
instead of its 406, and the second's job never completes.
"""

from __future__ import annotations

import logging

import pytest

from serve.http.app import create_app
from serve.metrics import record
from serve.settings import Settings
from tests import speech
from tests.core.injection import Run, Wrapped


class Raising:
    """An outlet whose every method raises, counting the calls it got."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        def fail(*args):
            self.calls.append(name)
            raise RuntimeError(f"injected: {name}")
        return fail


@pytest.fixture
def raising():
    outlet = Raising()
    yield outlet
    record.install()


class Idle:
    ready, backend = True, None
    concurrency = 4

    def require_ready(self):
        return self


def test_each_event_swallows_its_outlets_error_and_logs_it_once(raising, caplog):
    record.install(raising)
    with caplog.at_level(logging.ERROR, logger="serve.metrics.record"):
        for _ in range(3):
            record.request(record.RequestDone("/invocations", 200, "", 1.0))
            record.engine_call(2, 0.5)
            record.queue(3, 16000 * 45)
    assert raising.calls.count("request") == 3 and raising.calls.count("engine_call") == 3
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3, logged  # once per event, not per call
    assert record.state.queued_windows == 3 and record.state.queued_audio_seconds == 45.0


def test_a_raising_metric_leaves_the_answer_as_it_was(tmp_path, raising, caplog):
    """An answer that fails before any work (406) is logged, and its metrics recorded, in the request's
    thread: the injected fault must not turn it into a 500."""
    app = create_app(Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path)}), Idle())
    record.install(raising)  # after create_app, which installed the real outlets
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="serve.metrics.record"):
        answers = [client.post("/invocations", data=b"x", headers={"Accept": "text/x-nothing"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [406, 406], [a.get_data(as_text=True) for a in answers]
    assert answers[0].json["error"]["type"] == "NotAcceptable"
    assert raising.calls.count("request") == 2
    assert len([r for r in caplog.records if "request" in r.getMessage()]) == 1


def test_a_raising_metric_leaves_the_scheduler_serving(real, tmp_path, raising):
    """Engine calls, queue changes and decodes all record from the scheduler's threads."""
    record.install(raising)
    run = Run(Wrapped(real), tmp_path, max_batch=2)
    try:
        clips = speech.corpus(3)
        jobs = [run.submit(c.path) for c in clips]
        texts = [job.wait(timeout=300).text for job in jobs]
    finally:
        run.close()
    assert all(texts), texts
    assert {"engine_call", "queue", "decoded"} <= set(raising.calls)


class Counting:
    """An outlet that counts the events it gets."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append(name)


def test_a_live_session_that_falls_behind_counts_once_as_lagging():
    """Its passes held back (a gate), turn after turn: the session is closed for lagging (1013), counted once."""
    from serve.live.protocol import SessionConfig
    from serve.live.session import LiveLimits, LiveSession, SessionClosing
    from tests.live.test_session import Scripted, _audio, _feed

    counting = Counting()
    record.install(counting)
    fake = Scripted()
    fake.gate.clear()
    session = LiveSession(SessionConfig(turn_detection=None), fake, lambda event: None, LiveLimits(max_pending=2))
    try:
        with pytest.raises(SessionClosing) as closing:
            for _ in range(10):
                _feed(session, _audio(1))
                session.commit()
    finally:
        session.abort()
        record.install()
    assert closing.value.error_code == "session_lagging"
    assert counting.calls.count("live_lagging") == 1
