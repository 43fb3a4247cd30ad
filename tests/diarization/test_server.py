"""Diarized requests on the real server (nginx, gunicorn, the embedded CAM++ model, tiny.en on ctranslate2).

One two-voice espeak conversation is sent a few ways and its answers kept
(``answers``), so the suite pays for each diarization once. The DER bounds
here are loose on purpose (segments, not the diarizer's own turns): the
diarizer's accuracy is measured in test_diarizer.py and bench/diarization.py;
these tests check what reaches the caller.
"""

from __future__ import annotations

import json
import socket
import time
import wave
from types import SimpleNamespace
from urllib.parse import urlparse

import openai
import pytest
import requests

from tests import conversations, speech

ctranslate2 = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)
ATTRS = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def talk() -> conversations.Recording:
    return conversations.conversation(2, 45, seed=3)


@pytest.fixture(scope="module")
def short() -> conversations.Recording:
    """For what several requests need and accuracy does not: every writer, the speaker count."""
    return conversations.conversation(2, 15, seed=4)


_answers: dict = {}


def answer(server, recording, attrs: str, accept: str = "application/json") -> requests.Response:
    """POST the recording to /invocations once per (attributes, Accept) for the module."""
    key = (server.url, str(recording.path), attrs, accept)
    if key not in _answers:
        _answers[key] = requests.post(server.url + "/invocations", data=recording.path.read_bytes(), timeout=600,
                                      headers={"Content-Type": "audio/wav", ATTRS: attrs, "Accept": accept})
    return _answers[key]


def turns_of(segments) -> list:
    return [SimpleNamespace(start=s["start"], end=s["end"], speaker=s["speaker"]) for s in segments]


@ctranslate2
def test_json_labels_every_segment_and_lists_the_speakers(server, talk):
    r = answer(server, talk, "diarize=true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["speaker"] for s in body["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert body["segments"][0]["speaker"] == "SPEAKER_00", "labels go in order of first appearance"
    assert all(s["speaker"] in ("SPEAKER_00", "SPEAKER_01") for s in body["segments"])
    assert "words" not in body and all("words" not in s for s in body["segments"]), \
        "words were decoded only to split segments; the request did not ask for them"
    truth = sum(end - start for start, end, _ in talk.turns)
    assert 0.8 * truth < sum(s["speaking_time"] for s in body["speakers"]) < 1.2 * truth
    scored = conversations.score(talk, turns_of(body["segments"]))
    assert scored["der"] < 0.15, scored
    logged = [json.loads(x) for x in server.log().splitlines() if x.startswith('{"event": "invocation"')]
    assert [x.get("diarization_vad") for x in logged if x.get("diarization_seconds") is not None][0] == "shared", \
        "the diarization reads the transcription VAD's speech: the VAD runs once"
    # the words are the transcription's, untouched by the labels
    plain = answer(server, talk, "diarize=false").json()
    assert speech.normalize(body["text"]) == speech.normalize(plain["text"])
    assert "speakers" not in plain and all("speaker" not in s for s in plain["segments"])


@ctranslate2
def test_words_carry_speakers_and_a_segment_never_holds_two_voices(server, talk):
    body = answer(server, talk, "diarize=true;word_timestamps=true").json()
    for segment in body["segments"]:
        assert segment["words"], segment
        assert {w["speaker"] for w in segment["words"]} == {segment["speaker"]}, segment
    assert [w["speaker"] for w in body["words"]] == [w["speaker"] for s in body["segments"] for w in s["words"]]


@ctranslate2
def test_every_writer_shows_the_speakers(server, short):
    talk = short
    segments = answer(server, talk, "diarize=true").json()["segments"]
    assert {s["speaker"] for s in segments} == {"SPEAKER_00", "SPEAKER_01"}
    said = [f"[{s['speaker']}]: {s['text'].strip()}" for s in segments]

    text = answer(server, talk, "diarize=true", "text/plain").text
    assert text.splitlines() == said

    srt = answer(server, talk, "diarize=true", "application/x-subrip").text
    assert [line for line in srt.splitlines() if line.startswith("[SPEAKER_")] == said

    vtt = answer(server, talk, "diarize=true", "text/vtt").text
    assert [line for line in vtt.splitlines() if line.startswith("<v ")] == \
        [f"<v {s['speaker']}>{s['text'].strip()}" for s in segments]

    tsv = answer(server, talk, "diarize=true", "text/tab-separated-values").text.splitlines()
    assert tsv[0] == "start\tend\ttext\tspeaker"
    assert [row.split("\t")[3] for row in tsv[1:]] == [s["speaker"] for s in segments]


@ctranslate2
def test_num_speakers_is_honoured(server, short):
    body = answer(server, short, "diarize=true;num_speakers=1").json()
    assert body["speakers"] and [s["speaker"] for s in body["speakers"]] == ["SPEAKER_00"]
    assert {s["speaker"] for s in body["segments"]} == {"SPEAKER_00"}


@ctranslate2
def test_diarized_json_through_the_official_openai_client(server, talk):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
    with open(talk.path, "rb") as f:
        result = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="diarized_json")
    assert type(result).__name__ == "TranscriptionDiarized"
    assert result.task == "transcribe" and result.duration == pytest.approx(talk.seconds, abs=0.05)
    assert [s.speaker for s in result.segments][0] == "A" and {s.speaker for s in result.segments} == {"A", "B"}
    assert all(s.type == "transcript.text.segment" and s.end > s.start for s in result.segments)
    ours = answer(server, talk, "diarize=true").json()["segments"]
    assert [(s.text, s.speaker) for s in result.segments] == \
        [(s["text"], {"SPEAKER_00": "A", "SPEAKER_01": "B"}[s["speaker"]]) for s in ours]


@ctranslate2
def test_one_voice_is_one_speaker_and_silence_is_none(server, tmp_path):
    one = speech.speak(" ".join(speech.SENTENCES[:3]))
    r = requests.post(server.url + "/invocations", data=one.path.read_bytes(), timeout=600,
                      headers={"Content-Type": "audio/wav", ATTRS: "diarize=true"})
    assert r.status_code == 200, r.text
    assert [s["speaker"] for s in r.json()["speakers"]] == ["SPEAKER_00"]

    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(2 * 16000 * 12))
    r = requests.post(server.url + "/invocations", data=silence.read_bytes(), timeout=600,
                      headers={"Content-Type": "audio/wav", ATTRS: "diarize=true"})
    assert r.status_code == 200, r.text
    assert r.json()["speakers"] == [] and r.json()["segments"] == [] and r.json()["text"] == ""


@ctranslate2
@pytest.mark.parametrize("attrs, param", [
    ("diarize=true;num_speakers=0", "num_speakers"),
    ("diarize=true;max_speakers=21", "max_speakers"),
    ("diarize=true;min_speakers=3;max_speakers=2", "min_speakers"),
    ("diarize=true;num_speakers=4;max_speakers=3", "num_speakers"),
    ("num_speakers=2", "num_speakers"),
    ("diarize=maybe", "diarize"),
    ("diarize=true;stream=true", "diarize"),
])
def test_bad_speaker_options_are_400s_naming_the_option(server, attrs, param):
    clip = speech.speak(speech.SENTENCES[0])
    r = requests.post(server.url + "/invocations", data=clip.path.read_bytes(), timeout=60,
                      headers={"Content-Type": "audio/wav", ATTRS: attrs})
    assert r.status_code == 400, r.text
    assert param in r.json()["error"]["message"]


@ctranslate2
def test_openai_refusals(server):
    clip = speech.speak(speech.SENTENCES[0])
    for route, fields, param in [
        ("/v1/audio/translations", {"response_format": "diarized_json"}, "response_format"),
        ("/v1/audio/transcriptions", {"response_format": "diarized_json", "diarize": "false"}, "diarize"),
        ("/v1/audio/transcriptions", {"response_format": "diarized_json", "stream": "true"}, "response_format"),
    ]:
        with open(clip.path, "rb") as f:
            r = requests.post(server.url + route, files={"file": ("a.wav", f)}, timeout=60,
                              data={"model": "whisper-1", **fields})
        assert r.status_code == 400, (route, fields, r.text)
        assert r.json()["error"]["param"] == param, r.json()


@ctranslate2
def test_a_client_that_leaves_mid_diarization_leaves_nothing_behind(server, talk):
    """The diarization thread holds the request's files while it reads them; they go once it has stopped."""
    url = urlparse(server.url)
    body = talk.path.read_bytes()
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall((f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                   f"{ATTRS}: diarize=true\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        deadline = time.monotonic() + 60
        while not server.request_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.request_files(), "the request never started"
        time.sleep(1.0)  # well inside its transcription and diarization
    deadline = time.monotonic() + 60
    while server.request_files() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.request_files()
    line = [json.loads(x) for x in server.log().splitlines() if x.startswith('{"event": "invocation"')][-1]
    assert line["status"] == 499 or line.get("error_type") == "Cancelled", line


@ctranslate2
def test_an_async_request_is_diarized(server, short, tmp_path):
    """The async endpoint (localmodes, as SageMaker runs it) passes diarize through its custom attributes."""
    from localmodes import async_endpoint
    from tests.localmodes.test_async import audio, finished, running_service
    from tests.localmodes.test_support import wait_until

    with running_service(tmp_path, server.url) as (service, url):
        async_endpoint.invoke(url, audio(tmp_path, "talk.wav", short.path.read_bytes()), "whisper-async",
                              inference_id="talk-1", accept="application/json",
                              custom_attributes="diarize=true;max_speakers=4")
        wait_until(lambda: finished(service, 1), 600, "the diarized request")
    result = json.loads((tmp_path / "out" / "talk-1.out").read_text())
    assert [s["speaker"] for s in result["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert result["segments"] and all(s["speaker"] in ("SPEAKER_00", "SPEAKER_01") for s in result["segments"])


def _voice_clip(v: int, sentence: str) -> str:
    import base64

    name, pitch, rate = conversations.VOICES[v]
    data = speech.speak(sentence, name, speed=rate, pitch=pitch).path.read_bytes()
    return "data:audio/wav;base64," + base64.b64encode(data).decode()


@ctranslate2
def test_known_speakers_are_named_through_the_official_client(server, talk):
    """References of other sentences by the conversation's two voices name them; OpenAI's A/B otherwise."""
    said = " ".join(text for _, text in talk.texts)
    fresh = [s for s in speech.story_sentences(40, seed=91) if s not in said]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
    with open(talk.path, "rb") as f:
        result = client.audio.transcriptions.create(
            file=f, model="whisper-1", response_format="diarized_json",
            known_speaker_names=["bob", "ann"], known_speaker_references=[_voice_clip(1, fresh[0]),
                                                                          _voice_clip(0, fresh[1])])
    ours = answer(server, talk, "diarize=true").json()["segments"]
    first_voice = talk.turns[0][2]  # spk0 speaks first: SPEAKER_00 is VOICES[0], "ann"
    assert first_voice == "spk0"
    assert [(s.text, s.speaker) for s in result.segments] == \
        [(s["text"], {"SPEAKER_00": "ann", "SPEAKER_01": "bob"}[s["speaker"]]) for s in ours]


@ctranslate2
def test_known_speaker_refusals_name_the_field(server, talk):
    clip = speech.speak(speech.SENTENCES[0])
    good = _voice_clip(0, speech.SENTENCES[2])
    for fields, param in [
        ({"response_format": "json", "known_speaker_names[]": ["ann"], "known_speaker_references[]": [good]},
         "known_speaker_names[]"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["ann", "bob"],
          "known_speaker_references[]": [good]}, "known_speaker_references[]"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["ann"],
          "known_speaker_references[]": ["data:audio/wav;base64,bm90IGF1ZGlv"]}, "known_speaker_references[]"),
    ]:
        with open(clip.path, "rb") as f:
            r = requests.post(server.url + "/v1/audio/transcriptions", files={"file": ("a.wav", f)}, timeout=60,
                              data={"model": "whisper-1", **fields})
        assert r.status_code == 400, (fields, r.text)
        assert r.json()["error"]["param"] == param, r.json()
