"""/ping stays fast while a long transcription runs; concurrent requests queue and all succeed.

Runs on the ctranslate2 server shared with the other server test modules.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests import speech

ct2 = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)

PING_BUDGET_S = 2.0


@ct2
def test_ping_answers_within_2s_while_a_long_transcription_runs(server, long_clip):
    data = long_clip.path.read_bytes()
    result: dict = {}

    def long_request():
        result["response"] = requests.post(server.url + "/invocations", data=data,
                                           headers={"Content-Type": "audio/wav", "Accept": "text/plain"}, timeout=900)

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(2.0)  # the upload of a few MB over loopback is done; the model is busy
    pings = []
    for _ in range(5):
        start = time.monotonic()
        r = requests.get(server.url + "/ping", timeout=PING_BUDGET_S)
        pings.append(time.monotonic() - start)
        assert r.status_code == 200 and r.content == b""
        time.sleep(0.3)
    busy_during_pings = thread.is_alive()
    thread.join()
    assert busy_during_pings, "the long request finished before the pings: the test proved nothing"
    assert max(pings) < PING_BUDGET_S, pings
    response = result["response"]
    assert response.status_code == 200, response.text
    assert speech.incomplete(long_clip, response.text) == []


@ct2
def test_concurrent_requests_queue_and_all_succeed(server):
    clips = speech.corpus(4)

    def send(clip):
        r = requests.post(server.url + "/invocations", data=clip.path.read_bytes(),
                          headers={"Content-Type": "audio/wav"}, timeout=300)
        return clip, r

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, clips))
    refs = [clip.text for clip in clips]
    for clip, r in results:
        assert r.status_code == 200, r.text
        # each answer is its own clip's: nearer its text than any other clip's
        assert speech.nearest(r.json()["text"], refs) == clip.text, (clip.text, r.json()["text"])
    hyps = [r.json()["text"] for _, r in results]
    assert speech.wer(refs, hyps) <= speech.MAX_SET_WER, list(zip(refs, hyps))
    # one scheduler: requests that arrive together share engine calls
    ids = {r.headers["X-Request-Id"] for _, r in results}
    assert len(ids) == len(clips)
    events = [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{") and any(i in ln for i in ids)]
    assert len(events) == len(clips)
    calls = [e["engine_call"] for e in events]
    assert len(set(calls)) < len(calls), f"each request had an engine call of its own: {calls}"


def test_sigterm_lets_the_in_flight_request_finish_then_exits_within_30s():
    from tests.server_harness import running_server, stop  # after the plugin import (assertion rewriting)

    clip = speech.long_clip(1.0)
    with running_server("ctranslate2") as server:
        result: dict = {}

        def request():
            result["response"] = requests.post(server.url + "/invocations", data=clip.path.read_bytes(),
                                               headers={"Content-Type": "audio/wav", "Accept": "text/plain"},
                                               timeout=120)

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive()
        seconds = stop(server)  # SIGTERM, as SageMaker sends it
        thread.join()
        assert seconds < 30
        response = result["response"]
        assert response.status_code == 200, response.text
        assert speech.wer([clip.text], [response.text]) <= speech.MAX_SET_WER
        assert "Shutting down" in server.log()
        assert server.request_files() == []
