"""A worker whose engine can no longer serve is replaced: the real server (nginx, gunicorn) with an injected
device error.

The server's Python processes import a ``sitecustomize`` (on PYTHONPATH, written by the test) that wraps
the engine the worker loads so that a marked clip (tests/core/injection.py) raises a CUDA error. What must
hold: that request gets a JSON 503 with Retry-After, /ping answers 503 at once, the worker exits and a new
one takes its place, /ping turns 200 again and the next request is served. Nothing is timed but the waits
for the restart, whose bound only catches a server that never recovers.
"""

from __future__ import annotations

import time

import requests

from tests import speech
from tests.server_harness import START_TIMEOUT_S, running_server

INJECTION = '''
import os

if os.environ.get("WHISPER_TEST_INJECT") == "device-error-on-marked":
    import serve.backends as backends

    load_real = backends.load_backend

    def load_backend(settings):
        from tests.core.injection import Raise, Wrapped

        error = lambda: RuntimeError("CUDA error: an illegal memory access was encountered")
        return Wrapped(load_real(settings), Raise(error))

    backends.load_backend = load_backend
'''


def _post(url: str, path):
    return requests.post(url + "/invocations", data=path.read_bytes(), headers={"Content-Type": "audio/wav"},
                         timeout=300)


def test_a_device_error_makes_the_worker_say_so_and_be_replaced(tmp_path, marked, corpus):
    (tmp_path / "sitecustomize.py").write_text(INJECTION)
    env = {"PYTHONPATH": str(tmp_path), "WHISPER_TEST_INJECT": "device-error-on-marked"}
    with running_server("ctranslate2", env=env) as server:
        before = server.workers()
        assert _post(server.url, corpus[2].path).status_code == 200

        r = _post(server.url, marked)
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert r.json()["error"]["type"] == "ServiceUnavailable" and "illegal memory access" in r.text
        ping = requests.get(server.url + "/ping", timeout=5)
        assert ping.status_code == 503 and ping.headers["Content-Type"] == "application/json", ping.text

        deadline = time.monotonic() + START_TIMEOUT_S
        while not (server.workers() - before and requests.get(server.url + "/ping", timeout=5).status_code == 200):
            assert time.monotonic() < deadline, "the worker was not replaced:\n" + server.log_tail()
            time.sleep(0.5)
        assert not server.workers() & before, "the broken worker is still there"
        again = _post(server.url, corpus[2].path)
        assert again.status_code == 200 and speech.wer([corpus[2].text], [again.json()["text"]]) <= \
            speech.MAX_CLIP_WER, again.text
        assert "exits: the engine hit a device error" in server.log()
