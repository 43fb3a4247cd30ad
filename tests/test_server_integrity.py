"""Integrity and isolation through the real server: a decoder failure of ours is never a 200, and the
body is all that ffmpeg reads.

| fault                                  | what must hold                                                      |
|----------------------------------------|---------------------------------------------------------------------|
| ffmpeg SIGKILLed mid-decode            | JSON 503 + Retry-After; streamed, segments out: an error as the last line, never `done` |
| ffmpeg unable to start (Popen raises)  | JSON 503 + Retry-After, not a wait for the timeout; the worker's threads back to their count; the next request served |
| a body naming other files or URLs      | 415; nothing opened or fetched; nothing of theirs in the answer     |

One server, whose PATH starts with an ffmpeg the tests switch between requests
(``tests/ffmpeg_switch.py``). Its request timeout is long (300 s), so a request
that waits for it instead of failing at once shows as a 504.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Iterator

import psutil
import pytest
import requests

from tests import speech
from tests.ffmpeg_switch import FfmpegSwitch, ffmpeg_children, kill_mid_decode
from tests.server_harness import ServerHandle, running_server
from tests.tripwires import Tripwires, referencing_bodies

TIMEOUT_S = 300
HANG_GUARD_S = 120
"""Only for what never happens when all is well: no bound on how fast anything is."""
CA = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def switch(tmp_path_factory) -> FfmpegSwitch:
    return FfmpegSwitch(tmp_path_factory.mktemp("ffmpeg"))


@pytest.fixture(scope="module")
def integrity(switch) -> Iterator[ServerHandle]:
    env = {**switch.env(), "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(TIMEOUT_S)}
    with running_server("ctranslate2", env=env) as handle:
        yield handle


@pytest.fixture
def server(integrity, switch) -> Iterator[ServerHandle]:
    """The server with the real ffmpeg, given back so, with no request file left behind."""
    switch.set("real")
    yield integrity
    switch.set("real")
    deadline = time.monotonic() + HANG_GUARD_S
    while integrity.request_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert integrity.request_files() == []


def worker(server: ServerHandle) -> psutil.Process:
    (pid,) = server.workers()
    return psutil.Process(pid)


def post(server: ServerHandle, body: bytes, headers: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(server.url + "/invocations", data=body,
                         headers={"Content-Type": "application/octet-stream", **(headers or {})},
                         timeout=TIMEOUT_S + 60, **kwargs)


def assert_heard(response: requests.Response, clip: speech.Clip) -> None:
    assert response.status_code == 200, response.text
    assert speech.wer([clip.text], [response.json()["text"]]) <= speech.MAX_CLIP_WER, response.json()["text"]


def assert_service_fault(error: dict, needle: str) -> None:
    assert error["type"] == "ServiceUnavailable", error
    assert needle in error["message"] and "send it again" in error["message"], error


# --- ffmpeg killed mid-decode ---------------------------------------------------------------------


def test_a_decoder_killed_mid_decode_is_a_503_never_a_200(server, switch, long_flac):
    """Three minutes, decoded at real-time speed: once its first 10 s are on disk, ffmpeg is SIGKILLed.
    The old server answered 200 with those seconds' transcript (and a warning that the input "ends early")."""
    switch.set("slow")
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(r=post(server, long_flac.path.read_bytes())))
    thread.start()
    kill_mid_decode(server, thread.is_alive)
    thread.join()

    r = answer["r"]
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert r.headers["Content-Type"] == "application/json"
    assert_service_fault(r.json()["error"], "killed (signal 9, SIGKILL)")


def test_a_decoder_killed_mid_stream_ends_it_with_an_error_never_done(server, switch, long_flac):
    """Streamed, and killed once the first segment is out (the status, 200, is sent): the last line is
    the 503 error. (Killed before any segment, a streamed request gets the JSON 503 above.)"""
    switch.set("slow")
    # without the VAD (which reads 120 s blocks) the first window is cut after 30 s of audio, not 120 s
    r = post(server, long_flac.path.read_bytes(), {CA: "stream=true;vad_filter=false"}, stream=True)
    assert r.status_code == 200, r.text
    lines = r.iter_lines()
    first = json.loads(next(line for line in lines if line))
    assert first["type"] == "segment", first
    [ffmpeg] = ffmpeg_children(worker(server).pid)
    ffmpeg.kill()
    rest = [json.loads(line) for line in lines if line]
    assert rest and "done" not in [line["type"] for line in rest], rest
    assert rest[-1]["type"] == "error" and rest[-1]["error"]["status"] == 503, rest[-1]
    assert_service_fault(rest[-1]["error"], "killed (signal 9, SIGKILL)")


# --- ffmpeg unable to start -----------------------------------------------------------------------


def settled_threads(process: psutil.Process, equal_to: int | None = None) -> int:
    """The process's thread count once it stops changing (or reaches ``equal_to``): a request's own
    threads end a moment after its answer."""
    deadline = time.monotonic() + HANG_GUARD_S
    last = process.num_threads()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = process.num_threads()
        if (now == equal_to) if equal_to is not None else (now == last):
            return now
        last = now
    return last


def test_a_decoder_that_cannot_start_is_a_503_at_once_and_leaks_nothing(server, switch):
    """Popen raises (Exec format error here; EMFILE or ENOMEM alike). The old server left the request
    waiting for audio until its timeout (504), and its cutter thread waiting for good."""
    clip = speech.speak(speech.SENTENCES[2], fmt="flac")
    process = worker(server)
    assert_heard(post(server, clip.path.read_bytes()), clip)  # the pools have their threads
    threads = settled_threads(process)

    switch.set("broken")
    r = post(server, clip.path.read_bytes())
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert_service_fault(r.json()["error"], "could not start (Exec format error)")
    assert settled_threads(process, equal_to=threads) == threads, "a thread of the failed request stayed"

    switch.set("real")
    assert_heard(post(server, clip.path.read_bytes()), clip)
    assert settled_threads(process, equal_to=threads) == threads


# --- ffmpeg reads the body and nothing else -------------------------------------------------------

KINDS = list(referencing_bodies("/speech.mp3", "http://127.0.0.1:9/speech.mp3"))
SAID = speech.SENTENCES[5]  # what the named files hold, spoken


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_naming_other_files_or_urls_is_refused_and_nothing_is_read(server, tmp_path, kind):
    """Playlists, ffconcat lists, subfile and image2 pattern names, pointing at a file on the server's disk
    (by absolute path) and at a loopback HTTP server: sent raw, as a multipart file named like its format,
    and as base64 JSON. The old server transcribed the local file an HLS playlist named."""
    with Tripwires(tmp_path, speech.speak(SAID, fmt="mp3").path.read_bytes()) as wires:
        body = referencing_bodies(wires.local, wires.url)[kind]
        name = "playlist.m3u8" if kind.startswith("hls") else "list.ffconcat"
        answers = [
            post(server, body),
            requests.post(server.url + "/invocations", files={"file": (name, body)}, timeout=TIMEOUT_S),
            requests.post(server.url + "/invocations", json={"audio": base64.b64encode(body).decode()},
                          timeout=TIMEOUT_S),
        ]
        touched = wires.touched()
    assert touched == [], "ffmpeg read what the body named"
    for r in answers:
        assert r.status_code == 415 and r.headers["Content-Type"] == "application/json", r.text
        error = r.json()["error"]
        assert error["type"] == "UnsupportedMediaType" and "does not read" in error["message"], error
        assert not {"airport", "platform"} & set(speech.normalize(r.text).split()), r.text
