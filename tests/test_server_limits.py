"""What a request may send or name, through the real server (nginx in front): JSON bodies capped and parsed
without holding copies of the document, and s3_uri only under WHISPER_S3_ALLOW.

Memory is the worker's peak resident size over the request (``VmHWM`` after
resetting it through ``/proc/PID/clear_refs``): exact, whatever the load.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import requests

from tests import speech

ct2 = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)
MB = 1_000_000


def worker_of(server) -> int:
    (pid,) = server.workers()
    return pid


def _status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def peak_growth(server, send) -> tuple[requests.Response, int]:
    """``send()``'s answer, and how far the worker's resident memory rose above where it started meanwhile."""
    pid = worker_of(server)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status(pid, "VmRSS")
    response = send()
    return response, _status(pid, "VmHWM") - before


def post_json(server, body: bytes) -> requests.Response:
    return requests.post(server.url + "/invocations", data=body, headers={"Content-Type": "application/json"},
                         timeout=600)


@ct2
def test_a_150_mb_json_body_is_refused_from_its_length_without_growing_the_worker(server):
    body = b'{"audio": "' + b"A" * (150 * MB) + b'"}'
    r, growth = peak_growth(server, lambda: post_json(server, body))
    assert r.status_code == 413, r.text[:300]
    message = r.json()["error"]["message"]
    assert "WHISPER_MAX_JSON_MB" in message and "raw body" in message and "s3_uri" in message
    print(f"150 MB JSON body: worker peak growth {growth / MB:.0f} MB")
    assert growth < 200 * MB  # measured 0-1 MB; json.load of the whole body before any check: 450 MB
    assert requests.get(server.url + "/ping", timeout=5).status_code == 200


@ct2
def test_a_100_mb_base64_json_body_is_parsed_holding_the_string_about_twice_at_most(server):
    """Valid base64 of bytes ffmpeg refuses (415): the cost measured is the JSON's alone. The parser
    (yajl) and the string it hands over are the two copies; json.load held a third (the file's text)."""
    body = b'{"language": "en", "audio": "' + base64.b64encode(os.urandom(75 * MB)) + b'"}'
    r, growth = peak_growth(server, lambda: post_json(server, body))
    assert r.status_code == 415, r.text[:300]
    print(f"{len(body) / MB:.0f} MB base64 JSON body: worker peak growth {growth / MB:.0f} MB")
    assert growth < 2.5 * len(body)  # measured 200-221 MB; json.load: 300 MB


# --- s3_uri: only under WHISPER_S3_ALLOW (the shared servers allow s3://whisper-test-audio/inputs) -----------


@ct2
def test_s3_uri_outside_the_allowlist_answers_the_same_whether_or_not_the_object_exists(server, s3_env):
    from tests.server_harness import S3_BUCKET, s3_client

    s3_client(s3_env).put_object(Bucket=S3_BUCKET, Key="secret/clip.wav", Body=speech.speak("secret").path.read_bytes())
    answers = []
    for key in ("secret/clip.wav", "secret/missing.wav", "inputs2/clip.wav", "inputsx"):
        uri = f"s3://{S3_BUCKET}/{key}"
        r = post_json(server, f'{{"s3_uri": "{uri}"}}'.encode())
        answers.append((r.status_code, r.json()["error"]["type"], r.json()["error"]["message"].replace(uri, "<uri>")))
    assert len(set(answers)) == 1, answers
    assert answers[0][:2] == (400, "InvalidRequest") and "WHISPER_S3_ALLOW" in answers[0][2]


@ct2
def test_s3_uri_under_the_allowlist_is_read(server, s3_env):
    from tests.server_harness import S3_BUCKET, s3_client

    text = speech.SENTENCES[0]
    s3_client(s3_env).put_object(Bucket=S3_BUCKET, Key="inputs/limits/clip.wav", Body=speech.speak(text).path.read_bytes())
    r = post_json(server, f'{{"s3_uri": "s3://{S3_BUCKET}/inputs/limits/clip.wav"}}'.encode())
    assert r.status_code == 200, r.text
    assert speech.wer([text], [r.json()["text"]]) <= speech.MAX_CLIP_WER
