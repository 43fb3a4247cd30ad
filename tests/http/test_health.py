"""What a client and /ping see when the engine fails: the app in process over a real engine with injected faults.

The engine (tests/core/injection.py) raises or hangs on a marked clip; the
requests go through the real Flask app (routes, jobs, error table), many at
once from threads. The worker's exit after an unhealthy engine is recorded
here instead of happening (``on_unhealthy``); tests/test_server_health.py
watches the real server do it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve.core.runtime import Runtime
from serve.http.app import create_app
from serve.settings import Settings
from tests import speech
from tests.core.injection import Gate, Raise, Wrapped, wait_until

CUDA_ERROR = "CUDA error: device-side assert triggered"


class App:
    """The app over the real engine wrapped with ``hooks`` (from after the warm-up on), its runtime, and
    what it reported as unhealthy."""

    def __init__(self, real, folder, hooks, **env):
        self.unhealthy: list[str] = []
        self.engine = Wrapped(real)
        settings = Settings.from_env({"WHISPER_TMP_DIR": str(folder), "WHISPER_MAX_BATCH": "8", **env})
        self.runtime = Runtime(settings, lambda s: self.engine, on_unhealthy=self.unhealthy.append).start()
        assert self.runtime.wait_ready(600), self.runtime.error
        self.engine.hooks.extend(hooks)
        self.app = create_app(settings, self.runtime)

    def post(self, path):
        return self.app.test_client().post("/invocations", data=path.read_bytes(),
                                            headers={"Content-Type": "audio/wav"})

    def ping(self):
        return self.app.test_client().get("/ping")

    def together(self, gate: Gate, paths) -> list:
        """POST every file at once while a first request holds the engine; all are queued when it opens."""
        scheduler = self.runtime.scheduler
        with ThreadPoolExecutor(len(paths) + 1) as pool:
            blocker = pool.submit(self.post, speech.corpus(16)[8].path)
            gate.wait_entered()
            futures = [pool.submit(self.post, p) for p in paths]
            wait_until(lambda: len(scheduler._jobs) == len(paths) + 1 and all(j.cut_all for j in scheduler._jobs),
                       what="every request queued")
            gate.open_all()
            assert blocker.result().status_code == 200
            return [f.result() for f in futures]

    def close(self):
        for hook in getattr(self.engine, "hooks", []):
            if isinstance(hook, Gate):
                hook.open_all()
        self.runtime.scheduler.stop()


@pytest.fixture
def app(tmp_path):
    apps: list[App] = []

    def make(real, *hooks, **env) -> App:
        apps.append(App(real, tmp_path, hooks, **env))
        return apps[-1]

    yield make
    for a in apps:
        a.close()


def test_eight_requests_one_of_which_breaks_the_engine(real, corpus, marked, app):
    """The issue's test: 7 x 200 with their own words, 1 x JSON 5xx; the server stays healthy."""
    gate = Gate()
    a = app(real, gate, Raise(lambda: ValueError("cannot reshape array of size 0")))
    clips = corpus[:7]
    answers = a.together(gate, [c.path for c in clips] + [marked])
    for clip, r in zip(clips, answers[:7]):
        assert r.status_code == 200, (clip.text, r.json)
        assert speech.nearest(r.json["text"], [c.text for c in clips]) == clip.text, (clip.text, r.json["text"])
    bad = answers[7]
    assert bad.status_code == 500 and bad.json["error"]["type"] == "EngineError", bad.json
    assert "cannot reshape" in bad.json["error"]["message"]
    assert a.ping().status_code == 200 and not a.unhealthy


def test_a_device_error_turns_ping_503_and_every_request_503(real, corpus, marked, app):
    gate = Gate()
    a = app(real, gate, Raise(lambda: RuntimeError(CUDA_ERROR)))
    answers = a.together(gate, [corpus[0].path, marked])
    for r in answers:
        assert r.status_code == 503 and r.json["error"]["type"] == "ServiceUnavailable", r.json
        assert r.headers["Retry-After"] and "device-side assert" in r.json["error"]["message"]
    ping = a.ping()
    assert ping.status_code == 503 and "device-side assert" in ping.json["error"]["message"], ping.json
    late = a.post(corpus[1].path)
    assert late.status_code == 503 and late.headers["Retry-After"], late.json
    assert len(a.unhealthy) == 1


def test_a_hung_engine_call_turns_ping_503(real, corpus, app):
    gate = Gate()  # never opened while the test watches: every call hangs
    # No warm-up: a real engine call would be held to the 1 s bound too, and a busy machine takes longer.
    a = app(real, gate, WHISPER_ENGINE_TIMEOUT_S="1", WHISPER_WARMUP="false")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(a.post, corpus[0].path)
        gate.wait_entered()
        r = answer.result()
    assert r.status_code == 503 and "WHISPER_ENGINE_TIMEOUT_S" in r.json["error"]["message"], r.json
    assert a.ping().status_code == 503 and len(a.unhealthy) == 1


def test_a_dead_inference_thread_turns_ping_503(real, corpus, app, monkeypatch):
    from serve.core import scheduler as scheduler_module

    a = app(real)
    died = threading.Event()

    def broken(*args, **kwargs):
        died.set()
        raise SystemError("a bug in batch forming")

    monkeypatch.setattr(scheduler_module, "next_call", broken)
    r = a.post(corpus[0].path)
    assert died.is_set() and r.status_code == 503, r.json
    ping = a.ping()
    assert ping.status_code == 503 and "inference thread died" in ping.json["error"]["message"]
