"""OpenAI's audio API on the real server, driven by the official ``openai`` client, with the real tiny.en.

The same options and checks as /invocations behind a second door: the tests
compare the two doors' answers and errors where they must agree.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from tests import speech

TEXT = speech.SENTENCES[1]  # "Please call Stella and ask her to bring these things with her from the store."
ctranslate2_only = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)


@pytest.fixture(scope="module")
def clip() -> speech.Clip:
    return speech.speak(TEXT, fmt="mp3")


def client(server) -> openai.OpenAI:
    # No retries: a failure must show as it is (the client retries 5xx by default).
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def transcribe(server, clip, **kwargs):
    with open(clip.path, "rb") as f:
        return client(server).audio.transcriptions.create(file=f, **{"model": "whisper-1", **kwargs})


def post(server, route: str, clip, fields: dict) -> requests.Response:
    with open(clip.path, "rb") as f:
        return requests.post(server.url + route, files={"file": ("clip.mp3", f)}, data=fields, timeout=300)


def cue_text(subtitles: str) -> str:
    """The text lines of SRT or WebVTT cues (no header, numbers or timings)."""
    return " ".join(line for line in subtitles.splitlines()
                    if line and line != "WEBVTT" and not line.isdigit() and "-->" not in line)


# --- every response format ---------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "verbose_json", "vtt"])
def test_the_openai_client_transcribes_in_every_format(server, clip, response_format):
    result = transcribe(server, clip, response_format=response_format)
    if response_format == "json":
        text = result.text
        assert result.usage.type == "duration" and abs(result.usage.seconds - speech.duration(clip.path)) < 0.2
    elif response_format == "verbose_json":
        text = result.text
        assert result.language == "english" and abs(result.duration - speech.duration(clip.path)) < 0.2
        assert result.segments and result.words is None  # words only when asked
        assert "".join(s.text for s in result.segments).strip() == text
        assert all(s.end > s.start and s.avg_logprob is not None for s in result.segments)
    elif response_format == "text":
        assert isinstance(result, str) and result.endswith("\n")
        text = result
    else:
        assert isinstance(result, str)
        assert result.startswith("WEBVTT\n") if response_format == "vtt" else result.startswith("1\n00:00:")
        assert "-->" in result
        text = cue_text(result)
    assert speech.wer([TEXT], [text]) <= speech.MAX_CLIP_WER, text


def test_word_and_segment_timestamps(server, clip):
    result = transcribe(server, clip, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.segments and result.words
    words = [w.word.strip() for w in result.words]
    assert speech.wer([TEXT], [" ".join(words)]) <= speech.MAX_CLIP_WER
    assert all(w.end >= w.start for w in result.words)
    assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))

    only_words = transcribe(server, clip, response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.words and only_words.segments is None  # OpenAI: the granularities asked for


def test_streaming_with_the_openai_client(server, clip):
    """``stream=True``: a ``transcript.text.delta`` per segment, then ``transcript.text.done``; the deltas
    joined are the done text, which is the unstreamed answer's."""
    events = list(transcribe(server, clip, stream=True))
    *deltas, done = events
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas).strip() == done.text
    assert done.text == transcribe(server, clip).text
    assert speech.wer([TEXT], [done.text]) <= speech.MAX_CLIP_WER


@ctranslate2_only
def test_streaming_text_format_and_the_wire(server, clip):
    r = post(server, "/v1/audio/transcriptions", clip, {"model": "whisper-1", "stream": "true",
                                                         "response_format": "text"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Transfer-Encoding"] == "chunked"
    events = [json.loads(block.removeprefix("data: ")) for block in r.text.split("\n\n") if block]
    assert [e["type"] for e in events][-1] == "transcript.text.done"


# --- translation, and the model name -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's notice that whisper-1 will retire
def test_translation_is_refused_clearly_on_an_english_only_model(server, clip):
    with pytest.raises(openai.BadRequestError) as info:
        with open(clip.path, "rb") as f:
            client(server).audio.translations.create(file=f, model="whisper-1")
    error = info.value.body
    assert info.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_option" and error["param"] == "model"
    assert "English-only" in error["message"] and "tiny.en" in error["message"] and "multilingual" in error["message"]
    # the same refusal, word for word, as /invocations gives task=translate
    r = requests.post(server.url + "/invocations", data=clip.path.read_bytes(),
                      headers={"X-Amzn-SageMaker-Custom-Attributes": "task=translate"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["message"] == error["message"]


@ctranslate2_only
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
@pytest.mark.parametrize("response_format", ["json", "text", "srt", "verbose_json", "vtt"])
def test_translations_route_takes_every_format_up_to_the_model_check(server, clip, response_format):
    """The translation route parses every format OpenAI defines; tiny.en then refuses to translate."""
    with pytest.raises(openai.BadRequestError) as info:
        with open(clip.path, "rb") as f:
            client(server).audio.translations.create(file=f, model="whisper-1", response_format=response_format)
    assert info.value.body["code"] == "unsupported_option"


@ctranslate2_only
def test_the_loaded_model_is_listed_and_accepted_by_name_or_as_whisper_1(server, clip):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny.en"] and models.data[0].object == "model"
    assert transcribe(server, clip, model="tiny.en").text == transcribe(server, clip, model="whisper-1").text
    with open(clip.path, "rb") as f:  # what served it, whatever it was called
        raw = client(server).audio.transcriptions.with_raw_response.create(file=f, model="whisper-1")
    assert raw.headers["X-Whisper-Model"] == "tiny.en" and raw.headers["X-Whisper-Backend"] == "ctranslate2"


@ctranslate2_only
def test_another_model_name_is_a_404_that_names_the_loaded_model(server, clip):
    with pytest.raises(openai.NotFoundError) as info:
        transcribe(server, clip, model="large-v3")
    error = info.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'large-v3'" in error["message"] and "'tiny.en'" in error["message"]
    r = post(server, "/v1/audio/transcriptions", clip, {})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


# --- one options table, two doors ----------------------------------------------------------------


@ctranslate2_only
@pytest.mark.parametrize(("fields", "invocations", "status", "param"), [
    ({"language": "fr"}, "language=fr", 400, "language"),  # English-only model
    ({"language": "french!"}, "language=french!", 400, "language"),
    ({"beam_size": "0"}, "beam_size=0", 400, "beam_size"),  # an extension: our option, our check
    ({"chunk_length_s": "90"}, "chunk_length_s=90", 400, "chunk_length_s"),
    ({"vad_filter": "maybe"}, "vad_filter=maybe", 400, "vad_filter"),
    ({"temperature": "1.5"}, "temperature=1.5", 400, "temperature"),
    ({"stream": "perhaps"}, "stream=perhaps", 400, "stream"),
])
def test_options_are_validated_as_invocations_validates_them(server, clip, fields, invocations, status, param):
    """The same value is refused with the same status and message at both doors."""
    r = post(server, "/v1/audio/transcriptions", clip, {"model": "whisper-1", **fields})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    theirs = requests.post(server.url + "/invocations", data=clip.path.read_bytes(), timeout=60,
                           headers={"X-Amzn-SageMaker-Custom-Attributes": invocations})
    assert theirs.status_code == status and theirs.json()["error"]["message"] == error["message"]


@ctranslate2_only
@pytest.mark.parametrize(("fields", "status", "param", "says"), [
    ({"response_format": "tsv"}, 400, "response_format", "json, text, srt, verbose_json, vtt"),
    ({"timestamp_granularities[]": "word"}, 400, "timestamp_granularities", "verbose_json"),  # as OpenAI
    ({"timestamp_granularities[]": "sentence", "response_format": "verbose_json"}, 400,
     "timestamp_granularities", "segment and word"),
    ({"stream": "true", "response_format": "srt"}, 400, "response_format", "json or text"),
    ({"initial_prompt": "Stella"}, 400, "initial_prompt", "prompt"),  # OpenAI's name here
    ({"task": "translate"}, 400, "task", "unknown parameter"),  # the route says the task
])
def test_openai_fields_are_checked_as_openai_defines_them(server, clip, fields, status, param, says):
    r = post(server, "/v1/audio/transcriptions", clip, {"model": "whisper-1", **fields})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error


@ctranslate2_only
def test_prompt_and_temperature_are_taken(server, clip):
    """prompt is the initial prompt; temperature 0 is Whisper's fallback schedule from 0, another value
    is that temperature alone (the segments say what they were decoded at)."""
    result = transcribe(server, clip, prompt="Stella, store.", temperature=0.0, response_format="verbose_json")
    assert speech.wer([TEXT], [result.text]) <= speech.MAX_CLIP_WER
    assert all(s.temperature in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for s in result.segments)
    sampled = transcribe(server, clip, temperature=0.6, response_format="verbose_json")
    assert sampled.segments and all(s.temperature == 0.6 for s in sampled.segments)


@ctranslate2_only
def test_errors_have_the_openai_shape_and_the_invocations_status(server, clip):
    bad = requests.post(server.url + "/v1/audio/transcriptions", files={"file": ("x.mp3", b"not audio" * 50)},
                        data={"model": "whisper-1"}, timeout=60)
    assert bad.status_code == 415
    assert bad.json()["error"]["code"] == "unsupported_media_type" and bad.json()["error"]["param"] is None
    raw = requests.post(server.url + "/v1/audio/transcriptions", data=clip.path.read_bytes(), timeout=60,
                        headers={"Content-Type": "audio/mpeg"})
    assert raw.status_code == 400 and "multipart/form-data" in raw.json()["error"]["message"]
    no_file = requests.post(server.url + "/v1/audio/transcriptions", files={"model": (None, "whisper-1")},
                            timeout=60)
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]["message"]
    for method, path, status in (("get", "/v1/audio/transcriptions", 405), ("get", "/v1/nothing", 404)):
        r = getattr(requests, method)(server.url + path, timeout=10)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert requests.get(server.url + "/nothing", timeout=10).json()["error"]["type"] == "NotFound"  # ours


@ctranslate2_only
def test_each_openai_request_writes_its_log_line(server, clip):
    with open(clip.path, "rb") as f:
        raw = client(server).audio.transcriptions.with_raw_response.create(file=f, model="tiny.en")
    request_id = raw.headers["X-Request-Id"]
    for _ in range(50):  # written as the answer ends
        lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{") and request_id in x]
        if lines:
            break
        time.sleep(0.1)
    assert lines, server.log_tail()
    assert lines[0]["route"] == "/v1/audio/transcriptions" and lines[0]["status"] == 200
    assert lines[0]["input"] == "openai-multipart" and lines[0]["audio_seconds"] > 0
