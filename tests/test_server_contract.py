"""The SageMaker contract against the real gunicorn server, for each backend.

/ping, /execution-parameters, the /invocations basics, the request id and
the structured log line; plus a server whose model cannot load (503, honestly).
"""

from __future__ import annotations

import json
import os
import pwd
import time

import psutil
import pytest
import requests

from tests import speech

SENTENCE = speech.SENTENCES[2]  # "The weather today is sunny with a light breeze from the west."


def test_ping_is_200_with_an_empty_body(server):
    r = requests.get(server.url + "/ping", timeout=2)
    assert r.status_code == 200
    assert r.content == b""


def test_execution_parameters(server):
    r = requests.get(server.url + "/execution-parameters", timeout=5)
    assert r.status_code == 200
    # one CPU worker whose engine calls batch up to 4 windows (WHISPER_MAX_BATCH's CPU default): 4 records at
    # once keep it busy; SageMaker wants MaxConcurrentTransforms x MaxPayloadInMB <= 100
    assert r.json() == {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 25}


def test_invocation_json_default_and_request_id_logged(server):
    clip = speech.speak(SENTENCE)
    r = requests.post(server.url + "/invocations", data=clip.path.read_bytes(),
                      headers={"Content-Type": "audio/wav"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert speech.wer([SENTENCE], [body["text"]]) <= speech.MAX_CLIP_WER, body["text"]
    assert body["language"] == "en"
    assert abs(body["duration"] - speech.duration(clip.path)) < 0.1
    assert body["segments"] and all(s["end"] > s["start"] for s in body["segments"])
    assert "words" not in body  # not asked for
    assert body["backend"] == server.backend and body["model"] == "tiny.en"
    assert body["processing_seconds"] > 0

    request_id = r.headers["X-Request-Id"]
    line = _log_event(server, request_id)
    assert line["status"] == 200 and line["backend"] == server.backend
    assert line["audio_seconds"] == body["duration"]
    assert line["processing_seconds"] == body["processing_seconds"]
    assert line["rtf"] == round(body["processing_seconds"] / body["duration"], 4)
    assert line["input"] == "raw"


def test_get_on_invocations_is_a_json_405(server):
    r = requests.get(server.url + "/invocations", timeout=5)
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "MethodNotAllowed"


def test_unknown_route_is_a_json_404(server):
    r = requests.get(server.url + "/nope", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


def test_a_model_that_cannot_load_keeps_ping_503_with_the_reason(tmp_path):
    from tests.server_harness import running_server  # after the plugin import (assertion rewriting)

    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not a model")
    with running_server("auto", env={"WHISPER_MODEL_DIR": str(broken)}, wait=False) as srv:
        deadline = time.monotonic() + 120
        answers = []
        while time.monotonic() < deadline:
            try:
                r = requests.get(srv.url + "/ping", timeout=2)
            except requests.ConnectionError:
                time.sleep(0.2)
                continue
            answers.append(r.status_code)
            if "failed to load" in r.text:
                break
            time.sleep(0.2)
        assert set(answers) == {503}, answers
        error = r.json()["error"]
        assert error["type"] == "ModelNotReady" and "failed to load" in error["message"]
        assert "config.json" in error["message"]  # the artifact check's reason, not a generic failure
        inv = requests.post(srv.url + "/invocations", data=b"x", timeout=5)
        assert inv.status_code == 503
        assert srv.process.poll() is None  # still up: SageMaker sees an honest 503, and the log says why


def _capabilities(pid: int) -> int:
    """The effective capability set of ``pid`` (0: none of root's powers)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))


@pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)
def test_nginx_workers_never_run_as_root(server):
    """nginx's workers parse every request off the network and write its body to disk. Run as root (as
    SageMaker runs the container, and as CI runs these tests), serve gives them www-data, with no
    capability left; only the master, which binds the port and starts them, keeps root. Not root, they
    run as the caller, as before."""
    me = os.geteuid()
    expected = pwd.getpwnam("www-data") if me == 0 else pwd.getpwuid(me)
    masters = [p for p in psutil.Process(server.process.pid).children() if p.name() == "nginx"]
    assert len(masters) == 1, masters
    assert masters[0].uids().effective == me
    workers = masters[0].children()
    assert workers
    for worker in workers:
        assert set(worker.uids()) == {expected.pw_uid}, (worker, worker.username())
        assert set(worker.gids()) == {expected.pw_gid}, worker
        assert _capabilities(worker.pid) == 0, worker

    # What they need still works: a body over client_body_buffer_size (1 MB) goes to a file in
    # front/body, written by a worker, then through gunicorn's socket to the app, which answers.
    r = requests.post(server.url + "/invocations", data=b"\0" * 3_000_000,
                      headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 415 and r.json()["error"]["type"] == "UnsupportedMediaType", r.text
    assert (server.tmp_dir / "front" / "body").stat().st_uid == expected.pw_uid


def test_a_scratch_folder_the_nginx_workers_cannot_reach_stops_the_server(tmp_path):
    """Run as root, a WHISPER_TMP_DIR that www-data cannot get to would fail every request that nginx
    buffers to disk or passes on: serve says so and exits before starting anything. Not root, nginx's
    workers are the caller, and the same folder serves."""
    from tests.server_harness import running_server  # after the plugin import (assertion rewriting)

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with running_server("ctranslate2", env={"WHISPER_TMP_DIR": str(private / "tmp")}, wait=False) as srv:
        if os.geteuid() != 0:
            srv.server.wait_ready(120)
            return
        assert srv.process.wait(timeout=60) == 1, srv.log_tail()
        log = srv.log()
        assert "www-data, which cannot reach" in log and str(private / "tmp" / "front") in log, log
        assert "gunicorn" not in log.lower(), log  # nothing was started


def _log_event(server, request_id: str, attempts: int = 20) -> dict:
    """The structured line for ``request_id`` (written just after the response, so allow a moment)."""
    for _ in range(attempts):
        for raw in server.log().splitlines():
            if request_id in raw and raw.startswith("{"):
                return json.loads(raw)
        time.sleep(0.1)
    raise AssertionError(f"no log line for request {request_id}:\n{server.log_tail()}")


def test_ping_is_503_until_the_model_is_loaded(tmp_path):
    """In process, with a loader we control: /ping must not say 200 a moment too early."""
    import threading

    from serve.http.app import create_app
    from serve.settings import Settings
    from serve.backends.base import Device
    from serve.core.options import Capabilities, TranscribeOptions
    from serve.core.runtime import Runtime

    gate = threading.Event()

    class Loaded:
        name, model_name = "fake", "fake-model"
        device = Device("cpu")
        prompt_per_window = False  # what the scheduler reads of an engine before any request
        capabilities = Capabilities(name, model_name, True, {n: None for n in TranscribeOptions.names()}, {})

        def describe(self):
            return {"backend": self.name}

    def loader(settings):
        gate.wait(30)
        return Loaded()

    settings = Settings.from_env({"WHISPER_WARMUP": "false", "WHISPER_TMP_DIR": str(tmp_path)})
    runtime = Runtime(settings, loader).start()
    client = create_app(settings, runtime).test_client()
    for _ in range(3):
        r = client.get("/ping")
        assert r.status_code == 503 and r.json["error"]["type"] == "ModelNotReady"
        assert "loading" in r.json["error"]["message"]
    assert client.post("/invocations", data=b"x").status_code == 503
    gate.set()
    assert runtime.wait_ready(10)
    r = client.get("/ping")
    assert r.status_code == 200 and r.data == b""
