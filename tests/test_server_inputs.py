"""Every input kind and every output format, through the real server, for each backend.

The audio is espeak-ng speech with known text, so each answer is checked
against what was said, not against a recorded output.
"""

from __future__ import annotations

import base64
import re

import pytest
import requests

from tests import speech


TEXT = speech.SENTENCES[1]  # "Please call Stella and ask her to bring these things..."
MAX_WER = speech.MAX_CLIP_WER  # one sentence: any of the three engines, on any CPU
# Decoding (ffmpeg) and content negotiation don't depend on the engine: their
# long matrices run on the fastest backend only; every input kind and every
# output format still runs on all three.
ctranslate2_only = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)


def post(server, data=None, content_type: str | None = None, accept: str | None = None,
         attributes: str | None = None, **kwargs) -> requests.Response:
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    if attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    return requests.post(server.url + "/invocations", data=data, headers=headers, timeout=180, **kwargs)


def assert_transcribes(response: requests.Response, text: str = TEXT) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert speech.wer([text], [body["text"]]) <= MAX_WER, body["text"]
    return body


# --- inputs ----------------------------------------------------------------------------------


@ctranslate2_only
@pytest.mark.parametrize(("fmt", "content_type"), [
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("flac", "application/octet-stream"),
    ("m4a", "audio/x-audio"),  # the seed's content type
    ("webm", "audio/webm"),
    ("mp4", "video/mp4"),  # a video: its audio track is transcribed
    ("mp3", "audio/wav"),  # a wrong label: the bytes decide
])
def test_raw_audio_in_any_container(server, fmt, content_type):
    clip = speech.speak(TEXT, fmt=fmt)
    assert_transcribes(post(server, clip.path.read_bytes(), content_type))


@ctranslate2_only
def test_raw_body_streamed_chunked_without_content_length(server):
    clip = speech.speak(TEXT, fmt="flac")

    def chunks():
        data = clip.path.read_bytes()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    assert_transcribes(post(server, chunks(), "audio/flac"))


def test_json_base64_with_parameters(server):
    clip = speech.speak(TEXT, fmt="ogg")
    payload = {"audio": base64.b64encode(clip.path.read_bytes()).decode(), "parameters": {"word_timestamps": True}}
    body = assert_transcribes(post(server, json=payload))
    words = body["words"]
    assert len(words) >= len(TEXT.split()) - 2
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.5 for w in words)
    assert all("words" in s for s in body["segments"])


def test_json_s3_uri_read_with_boto3(server, s3_env):
    from tests.server_harness import S3_BUCKET, s3_client

    clip = speech.speak(TEXT, fmt="m4a", voice="en-gb")
    key = f"inputs/{server.backend}/clip.m4a"
    s3_client(s3_env).put_object(Bucket=S3_BUCKET, Key=key, Body=clip.path.read_bytes())
    assert_transcribes(post(server, json={"s3_uri": f"s3://{S3_BUCKET}/{key}", "language": "en"}))


def test_multipart_file_and_fields(server):
    clip = speech.speak(TEXT, fmt="mp3", voice="en-us+f3")
    r = post(server, files={"file": ("clip.mp3", clip.path.read_bytes(), "audio/mpeg")},
             data={"word_timestamps": "true", "language": "en"})
    body = assert_transcribes(r)
    assert body["language"] == "en" and body["words"]


def test_raw_body_with_custom_attributes_header(server):
    clip = speech.speak(TEXT, fmt="mp3")
    body = assert_transcribes(post(server, clip.path.read_bytes(), "application/octet-stream",
                                   attributes="language=en;task=transcribe;word_timestamps=true"))
    assert body["words"]


# --- outputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wav_bytes() -> bytes:
    return speech.speak(TEXT).path.read_bytes()


TIMING = re.compile(r"^(\d{2}:)?\d{2}:\d{2}[.,]\d{3} --> (\d{2}:)?\d{2}:\d{2}[.,]\d{3}$")


def test_text_plain(server, wav_bytes):
    r = post(server, wav_bytes, "audio/wav", accept="text/plain")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert speech.wer([TEXT], [r.text]) <= MAX_WER, r.text


@pytest.mark.parametrize(("accept", "header"), [("text/vtt", "WEBVTT"), ("application/x-subrip", "1")])
def test_subtitles(server, wav_bytes, accept, header):
    r = post(server, wav_bytes, "audio/wav", accept=accept)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(accept)
    lines = r.text.splitlines()
    assert lines[0] == header
    timings = [ln for ln in lines if "-->" in ln]
    assert timings and all(TIMING.match(ln) for ln in timings), lines
    if accept == "application/x-subrip":
        assert all("," in t for t in timings)
    spoken = " ".join(ln for ln in lines[1:] if ln and "-->" not in ln and not ln.isdigit())
    assert speech.wer([TEXT], [spoken]) <= MAX_WER, spoken


def test_tsv(server, wav_bytes):
    r = post(server, wav_bytes, "audio/wav", accept="text/tab-separated-values")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/tab-separated-values")
    rows = [ln.split("\t") for ln in r.text.splitlines()]
    assert rows[0] == ["start", "end", "text"]
    assert all(len(row) == 3 and int(row[0]) <= int(row[1]) for row in rows[1:])
    assert speech.wer([TEXT], [" ".join(row[2] for row in rows[1:])]) <= MAX_WER


@ctranslate2_only
def test_json_by_q_values(server, wav_bytes):
    accept = "text/html;q=0.9, application/*;q=0.8"
    r = post(server, wav_bytes, "audio/wav", accept=accept)
    assert r.headers["Content-Type"] == "application/json"
    assert_transcribes(r)
