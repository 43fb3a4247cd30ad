"""Each row of the error table, against the real server; the worker survives every one.

| status | when                                      | type                                |
|--------|-------------------------------------------|-------------------------------------|
| 400    | bad / unknown parameter, bad JSON, body   | InvalidParameter, UnsupportedOption, InvalidRequest |
| 406    | Accept we cannot produce                  | NotAcceptable (lists what we can)   |
| 413    | only over an operator's WHISPER_MAX_BODY_MB | PayloadTooLarge / RequestEntityTooLarge |
| 415    | audio ffmpeg cannot decode                | UnsupportedMediaType (ffmpeg's reason) |
| 500    | anything unexpected                       | InternalError (request id, logged)  |

Error handling is backend-independent, so this runs on the ctranslate2 server
(shared with the other modules) plus one small capped server.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import requests

from tests import speech

ct2 = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)

TEXT = speech.SENTENCES[0]
ATTRS = "X-Amzn-SageMaker-Custom-Attributes"


def invoke(url: str, data=None, headers: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(url + "/invocations", data=data, headers=headers or {}, timeout=120, **kwargs)


def error_of(r: requests.Response, status: int, error_type: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == error_type, error
    assert r.headers["X-Request-Id"]
    return error["message"]


def worker_pids(server) -> set[int]:
    return server.workers()


@pytest.fixture
def survives(server):
    """The same worker process answers before and after, and /ping stays 200."""
    before = worker_pids(server)
    assert before
    yield
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200
    assert worker_pids(server) == before, "a worker died and was replaced"


@pytest.fixture(scope="module")
def wav() -> bytes:
    return speech.speak(TEXT).path.read_bytes()


@ct2
@pytest.mark.parametrize(("headers", "json_body", "error_type", "needle"), [
    ({ATTRS: "beam_size=wide"}, None, "InvalidParameter", "beam_size must be an integer"),
    ({ATTRS: "word_timestamp=true"}, None, "InvalidParameter", "unknown parameter 'word_timestamp'"),
    ({ATTRS: "language"}, None, "InvalidParameter", "name=value"),
    ({ATTRS: "initial_prompt=" + "x" * 1024}, None, "InvalidParameter", "at most 1024"),
    ({ATTRS: "language=fr"}, None, "UnsupportedOption", "English-only"),
    ({ATTRS: "task=translate"}, None, "UnsupportedOption", "multilingual"),
    ({}, {"audio": "QUJD", "temperature": [0.5, 0.1]}, "InvalidParameter", "increase"),
])
def test_400_parameters(server, survives, wav, headers, json_body, error_type, needle):
    if json_body is None:
        r = invoke(server.url, wav, {"Content-Type": "audio/wav", **headers})
    else:
        r = invoke(server.url, json=json_body, headers=headers)
    assert needle in error_of(r, 400, error_type)


@ct2
@pytest.mark.parametrize(("body", "needle"), [
    (b'{"audio": "QUJD",', "not valid JSON"),
    (b'{"s3_uri": "http://bucket/key"}', "s3://bucket/key"),
    (b'{"audio": "%%%"}', "not valid base64"),
    (b'{}', 'exactly one of "audio"'),
])
def test_400_bad_json(server, survives, body, needle):
    r = invoke(server.url, body, {"Content-Type": "application/json"})
    assert needle in error_of(r, 400, "InvalidRequest")


@ct2
def test_400_multipart_without_a_file(server, survives):
    r = invoke(server.url, files={"language": (None, "en")})
    assert "no file field" in error_of(r, 400, "InvalidRequest")


@ct2
def test_400_empty_body(server, survives):
    assert "empty" in error_of(invoke(server.url, b"", {"Content-Type": "audio/wav"}), 400, "InvalidRequest")


@ct2
def test_406_lists_the_supported_types(server, survives, wav):
    r = invoke(server.url, wav, {"Content-Type": "audio/wav", "Accept": "application/pdf"})
    message = error_of(r, 406, "NotAcceptable")
    for mimetype in ("application/json", "text/plain", "text/vtt", "application/x-subrip", "text/tab-separated-values"):
        assert mimetype in message


@ct2
def test_415_undecodable_audio_carries_ffmpegs_reason(server, survives):
    r = invoke(server.url, b"this is plain text, not audio" * 100, {"Content-Type": "audio/wav"})
    message = error_of(r, 415, "UnsupportedMediaType")
    assert "Invalid data found" in message  # ffmpeg's words
    assert str(server.tmp_dir) not in message  # the temp path means nothing to the caller


@ct2
def test_415_video_without_an_audio_track(server, survives, tmp_path):
    silent_video = tmp_path / "video.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=64x64:r=5", "-t", "2",
                    "-c:v", "libx264", str(silent_video)], check=True)
    r = invoke(server.url, silent_video.read_bytes(), {"Content-Type": "video/mp4"})
    assert error_of(r, 415, "UnsupportedMediaType")


@ct2
def test_no_413_without_a_cap_even_over_torchserves_6_mb(server, survives, tmp_path):
    big = tmp_path / "big.wav"  # 40 s of 48 kHz stereo PCM: 7.7 MB
    clip = speech.speak(" ".join(speech.SENTENCES[:4]))  # four sentences: one alone swings with the CPU
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip.path), "-af", "apad", "-t", "40", "-ar", "48000",
                    "-ac", "2", str(big)], check=True)
    assert big.stat().st_size > 7_000_000
    r = invoke(server.url, big.read_bytes(), {"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert speech.wer([clip.text], [r.json()["text"]]) <= speech.MAX_SET_WER, r.json()["text"]


@ct2
def test_temp_dir_empty_after_all_the_errors(server):
    assert server.request_files() == []


# --- a server with an operator's cap, and S3 unreachable ---------------------------------------


@pytest.fixture(scope="module")
def capped():
    from tests.server_harness import free_port, running_server

    dead_port = free_port()  # nothing listens there: S3 is unreachable
    env = {"WHISPER_MAX_BODY_MB": "0.2", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{dead_port}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard", "AWS_EC2_METADATA_DISABLED": "true",
           "WHISPER_S3_ALLOW": "s3://bucket"}
    with running_server("ctranslate2", env=env) as handle:
        yield handle
        assert handle.request_files() == []


def _json_error(r: requests.Response, status: int, error_type: str) -> str:
    """An error nginx answers itself (the app never saw the request, so there is no request id)."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == error_type, error
    return error["message"]


def test_413_only_over_the_operators_cap_and_502_when_s3_is_unreachable(capped, wav):
    pids = worker_pids(capped)
    big = wav * 3  # > 0.2 MB
    assert len(wav) < 200_000 < len(big)
    assert "WHISPER_MAX_BODY_MB" in _json_error(invoke(capped.url, big, {"Content-Type": "audio/wav"}),
                                                413, "PayloadTooLarge")
    assert "WHISPER_MAX_BODY_MB" in _json_error(invoke(capped.url, files={"file": ("a.wav", big, "audio/wav")}),
                                                413, "PayloadTooLarge")
    payload = json.dumps({"audio": base64.b64encode(big).decode()}).encode()
    assert _json_error(invoke(capped.url, payload, {"Content-Type": "application/json"}), 413, "PayloadTooLarge")
    # under the cap: fine
    assert invoke(capped.url, wav, {"Content-Type": "audio/wav"}).status_code == 200

    r = invoke(capped.url, json={"s3_uri": "s3://bucket/clip.wav"})
    message = error_of(r, 502, "UpstreamUnavailable")
    assert "S3 could not be reached" in message and "s3://bucket/clip.wav" in message

    assert requests.get(capped.url + "/ping", timeout=2).status_code == 200
    assert worker_pids(capped) == pids


def test_500_carries_a_request_id_that_the_log_explains(tmp_path, caplog):
    """Anything unexpected: a 500 whose message gives the request id, logged with the traceback."""
    from serve.http.app import create_app
    from serve.settings import Settings

    class Broken:
        ready, concurrency, backend = True, 1, None

        def require_ready(self):
            return self

        def submit(self, *args):
            raise RuntimeError("the disk is on fire")

    settings = Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path)})
    client = create_app(settings, Broken()).test_client()
    with caplog.at_level("INFO"):
        r = client.post("/invocations", data=b"RIFF....", headers={"Content-Type": "audio/wav"})
    assert r.status_code == 500 and r.json["error"]["type"] == "InternalError"
    request_id = r.headers["X-Request-Id"]
    assert request_id in r.json["error"]["message"] and "fire" not in r.json["error"]["message"]
    assert any(f"request {request_id} failed" in rec.getMessage() and rec.exc_info for rec in caplog.records)
    assert any(request_id in rec.getMessage() and '"status": 500' in rec.getMessage() for rec in caplog.records)
    assert list(tmp_path.rglob("req-*")) == [], "the request's scratch folder stayed"
