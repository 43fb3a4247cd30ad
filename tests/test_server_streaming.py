"""Streaming from /invocations, through the real server (nginx, gunicorn) with the real tiny.en.

A streamed answer is one JSON object per segment as it is decoded, then a
``done`` summary, or an ``error`` line when it is cut short: as JSON Lines, or
as server-sent events with ``Accept: text/event-stream``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests import speech

CA = "X-Amzn-SageMaker-Custom-Attributes"
TEXT = speech.SENTENCES[1]
ctranslate2_only = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)
ROOT = Path(__file__).resolve().parents[1]


def invoke(server, data=None, headers=None, **kwargs) -> requests.Response:
    return requests.post(server.url + "/invocations", data=data, headers=headers or {}, timeout=900, **kwargs)


def stream_items(response: requests.Response) -> Iterator[dict]:
    """The objects of a streamed answer as they arrive: JSON Lines, or the data of server-sent events
    (each checked against its ``event:`` name)."""
    assert response.status_code == 200, response.text
    sse = response.headers["Content-Type"].startswith("text/event-stream")
    fields: dict = {}
    for line in response.iter_lines():
        if not sse:
            if line:
                yield json.loads(line)
        elif line:
            name, value = line.decode().split(": ", 1)
            fields[name] = value
        elif fields:
            data = json.loads(fields.pop("data"))
            assert fields.pop("event") == data["type"] and not fields, (data, fields)
            yield data


def json_lines(response: requests.Response) -> list[dict]:
    assert response.headers.get("Content-Type") == "application/jsonlines", response.text
    return list(stream_items(response))


def server_sent_events(response: requests.Response) -> list[dict]:
    assert response.headers.get("Content-Type", "").startswith("text/event-stream"), response.text
    return list(stream_items(response))


def assert_complete_stream(lines: list[dict]) -> tuple[list[dict], dict]:
    """Segment lines, in order, then exactly one ``done``: the segments (without ``type``) and the summary."""
    kinds = [line["type"] for line in lines]
    assert kinds == ["segment"] * (len(lines) - 1) + ["done"], kinds
    segments = [{k: v for k, v in line.items() if k != "type"} for line in lines[:-1]]
    done = lines[-1]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(a["start"] <= b["start"] for a, b in zip(segments, segments[1:]))
    assert done["segments"] == len(segments)
    assert done["text"] == "".join(s["text"] for s in segments).strip()
    return segments, done


def log_record(server, request_id: str, attempts: int = 50) -> dict:
    """The request's JSON log line (written as its answer ends)."""
    for _ in range(attempts):
        for raw in server.log().splitlines():
            if raw.startswith("{") and request_id in raw:
                return json.loads(raw)
        time.sleep(0.1)
    raise AssertionError(f"no log line for {request_id}:\n{server.log_tail()}")


# --- the same transcript, streamed or whole ------------------------------------------------------


def within_a_rounding_step(segments: list[dict]) -> list[dict]:
    """The segments, their scores matched within one step of their 4-decimal rounding.

    On CPU, transformers' first word-timestamp request after start scored one word 0.9241 and every
    later one 0.9242 (float noise at a rounding boundary; cause not traced). Text and times match exactly.
    """
    scores = {"probability", "avg_logprob", "no_speech_prob", "compression_ratio"}

    def matched(item: dict) -> dict:
        return {k: pytest.approx(v, abs=1.01e-4) if k in scores else [matched(w) for w in v] if k == "words" else v
                for k, v in item.items()}

    return [matched(s) for s in segments]


def test_streamed_segments_are_the_whole_answer(server, minute_clip):
    """Same audio, same options: the stream's segments and summary are the JSON answer's, on every engine."""
    audio = minute_clip.path.read_bytes()
    whole = invoke(server, audio, {CA: "word_timestamps=true"})
    assert whole.status_code == 200, whole.text
    whole = whole.json()
    streamed = invoke(server, audio, {CA: "word_timestamps=true;stream=true"}, stream=True)
    assert streamed.headers.get("Transfer-Encoding") == "chunked"  # no Content-Length: chunks as they come
    segments, done = assert_complete_stream(json_lines(streamed))

    assert segments == within_a_rounding_step(whole["segments"])
    assert all(s["words"] for s in segments)
    for key in ("text", "language", "duration", "backend", "model"):
        assert done[key] == whole[key], key
    assert done["processing_seconds"] > 0
    assert speech.wer([minute_clip.text], [done["text"]]) <= speech.MAX_SET_WER


@ctranslate2_only
def test_stream_is_asked_for_in_every_parameter_style(server):
    """Custom attributes, JSON body, form field or Accept: text/event-stream: the same segments."""
    clip = speech.speak(TEXT)
    audio = clip.path.read_bytes()
    answers = {
        "attributes": json_lines(invoke(server, audio, {CA: "stream=true"})),
        "json": json_lines(invoke(server, json={"audio": base64.b64encode(audio).decode(), "stream": True})),
        "json parameters": json_lines(invoke(server, json={"audio": base64.b64encode(audio).decode(),
                                                           "parameters": {"stream": "true"}})),
        "form": json_lines(invoke(server, files={"file": ("clip.wav", audio)}, data={"stream": "true"})),
        "event-stream": server_sent_events(invoke(server, audio, {"Accept": "text/event-stream"})),
        "event-stream + stream": server_sent_events(invoke(server, audio, {"Accept": "text/event-stream",
                                                                            CA: "stream=true"})),
    }
    texts = {}
    for how, lines in answers.items():
        segments, done = assert_complete_stream(lines)
        texts[how] = [s["text"] for s in segments]
        assert speech.wer([TEXT], [done["text"]]) <= speech.MAX_CLIP_WER, (how, done["text"])
    assert len(set(map(tuple, texts.values()))) == 1, texts


@ctranslate2_only
def test_stream_false_is_a_whole_answer(server):
    clip = speech.speak(TEXT)
    r = invoke(server, clip.path.read_bytes(), {CA: "stream=false"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert "Transfer-Encoding" not in r.headers and set(r.json()) >= {"text", "segments"}


@ctranslate2_only
def test_errors_before_the_first_segment_keep_their_http_status(server):
    """Nothing was sent yet: a format that cannot stream (406), a bad option (400), audio ffmpeg refuses (415)."""
    clip = speech.speak(TEXT)
    r = invoke(server, clip.path.read_bytes(), {CA: "stream=true", "Accept": "text/vtt"})
    assert r.status_code == 406 and r.json()["error"]["type"] == "NotAcceptable"
    r = invoke(server, clip.path.read_bytes(), {CA: "stream=true;language=fr"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "UnsupportedOption"
    r = invoke(server, b"this is not audio at all" * 100, {CA: "stream=true", "Content-Type": "audio/wav"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "UnsupportedMediaType"
    r = invoke(server, b"not audio" * 100, {"Accept": "text/event-stream"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "UnsupportedMediaType"


# --- the first segment comes while the rest is decoded --------------------------------------------


@pytest.fixture(scope="module")
def ten_minutes() -> speech.Clip:
    clip = speech.long_clip(10)
    assert speech.duration(clip.path) >= 600
    return clip


@ctranslate2_only
def test_first_segment_arrives_before_the_transcript_is_complete(server, ten_minutes):
    """Streaming a 10-minute file: as soon as its first segment line arrives, a short request is sent.

    The short request's first engine call must come no later than the calls
    the long one had made when it completed: it was decoded while the long
    transcription was still running, so the first line reached the client
    before the last window was decoded. (Buffered until complete, the long
    transcription's calls would all be over before the short one was sent.)
    Timings are printed, not asserted.
    """
    short = speech.speak(TEXT)
    started = time.monotonic()
    with open(ten_minutes.path, "rb") as body:
        response = invoke(server, body, {CA: "stream=true", "Content-Type": "audio/wav"}, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers.get("Transfer-Encoding") == "chunked"
    lines = response.iter_lines()
    first = json.loads(next(lines))
    first_at = time.monotonic() - started
    assert first["type"] == "segment" and first["id"] == 0

    probe = invoke(server, short.path.read_bytes(), {"Content-Type": "audio/wav"})
    probe_at = time.monotonic() - started
    assert probe.status_code == 200 and speech.wer([TEXT], [probe.json()["text"]]) <= speech.MAX_CLIP_WER

    rest = [json.loads(line) for line in lines if line]
    total = time.monotonic() - started
    segments, done = assert_complete_stream([first, *rest])
    print(f"\n10-minute file ({done['duration']:.0f} s of audio, {len(segments)} segments), streamed: first "
          f"segment after {first_at:.1f} s, short request answered at {probe_at:.1f} s, whole transcript after "
          f"{total:.1f} s (server: {done['processing_seconds']:.1f} s)")

    long_log = log_record(server, response.headers["X-Request-Id"])
    probe_log = log_record(server, probe.headers["X-Request-Id"])
    print(f"server: first event after {long_log['first_event_seconds']} s; engine calls: short request's first "
          f"{probe_log['engine_call']}, long one's at completion {long_log['engine_calls_at_done']}")
    assert long_log["stream"] is True and long_log["status"] == 200
    assert probe_log["engine_call"] <= long_log["engine_calls_at_done"]
    assert not speech.incomplete(ten_minutes, done["text"], segments)


# --- a stream cut short ends with an error line ------------------------------------------------


def test_a_stream_cut_by_an_error_ends_with_an_error_line():
    """Three 20-minute files streamed at once from a private server, which is stopped (SIGTERM, as
    SageMaker stops it) once each stream has sent its first segment.

    None can finish in the drain's 21 s, so each is cut short: JSON Lines,
    server-sent events and the OpenAI door's events each end with the
    ShuttingDown error (503, retry elsewhere) and no summary, so the client
    knows its transcript is incomplete. The server still exits within 30 s.
    """
    import openai

    from tests.server_harness import running_server  # after the plugin import (assertion rewriting)

    clip = speech.long_clip(20)
    with running_server("ctranslate2") as srv:
        results: dict = {}
        first = {how: threading.Event() for how in ("jsonl", "sse", "openai")}

        def invocations(how: str, headers: dict):
            with open(clip.path, "rb") as body:
                response = requests.post(srv.url + "/invocations", data=body, headers=headers, stream=True,
                                         timeout=600)
            results[how] = []
            for item in stream_items(response):
                results[how].append(item)
                first[how].set()

        def openai_events():
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
            results["openai"] = deltas = []
            try:
                with open(clip.path, "rb") as f:
                    for event in client.audio.transcriptions.create(file=f, model="whisper-1", stream=True):
                        deltas.append(event)
                        first["openai"].set()
            except openai.APIError as exc:
                deltas.append(exc)

        threads = [threading.Thread(target=invocations, args=("jsonl", {CA: "stream=true"})),
                   threading.Thread(target=invocations, args=("sse", {"Accept": "text/event-stream"})),
                   threading.Thread(target=openai_events)]
        for t in threads:
            t.start()
        for how, event in first.items():
            assert event.wait(600), f"no first segment from {how}:\n{srv.log_tail()}"
        stopped_in = srv.server.stop(30)
        for t in threads:
            t.join(60)
        print(f"\nstopped in {stopped_in:.1f} s; stream items: { {k: len(v) for k, v in results.items()} }")

        for how in ("jsonl", "sse"):
            kinds = [item["type"] for item in results[how]]
            assert kinds[0] == "segment" and kinds[-1] == "error" and "done" not in kinds, (how, kinds)
            error = results[how][-1]["error"]
            assert error["type"] == "ShuttingDown" and error["status"] == 503, error
        *deltas, exc = results["openai"]
        assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
        assert isinstance(exc, openai.APIError), exc
        assert exc.body["code"] == "shutting_down" and exc.body["type"] == "server_error", exc.body
        assert srv.request_files() == []


# --- the README's boto3 reader ----------------------------------------------------------------------


@ctranslate2_only
def test_readme_boto3_reader_puts_split_payload_parts_back_into_lines(server, minute_clip):
    """SageMaker's PayloadParts may split a line anywhere, even inside a character: the README's reader
    (run here on a real stream cut into parts of every size from 1 to 97 bytes) gives back every line."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    code = [b for b in blocks if "def payload_lines(" in b]
    assert len(code) == 1, "the README's boto3 streaming example defines payload_lines in a block of its own"
    namespace: dict = {}
    exec(code[0], namespace)  # noqa: S102 - our own README's code: an import and a function
    payload_lines = namespace["payload_lines"]

    expected = json_lines(invoke(server, minute_clip.path.read_bytes(), {CA: "stream=true"}))
    expected[0]["text"] += " caf\u00e9 \u2014 \U0001f3b5"  # characters of 2, 3 and 4 bytes to cut through
    raw = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in expected).encode()
    for size in (1, 2, 3, 7, 64, 97):
        parts = [{"PayloadPart": {"Bytes": raw[i:i + size]}} for i in range(0, len(raw), size)]
        assert list(payload_lines(parts)) == expected, size
