"""The live protocol: client events parsed, merged and refused as the spec says; server events that the
installed ``openai`` package's own models and client read. No model, no server: pure functions, and one
loopback WebSocket for the official clients."""

from __future__ import annotations

import base64
import json
import re
import threading
from contextlib import contextmanager

import pytest
from openai import OpenAI
from openai.resources.realtime.realtime import RealtimeConnection
from openai.types.beta.realtime import transcription_session_update as beta_update
from openai.types.realtime import (RealtimeServerEvent, SessionCreatedEvent, audio_transcription, realtime_audio_config,
                                   realtime_session_create_request, realtime_transcription_session_audio_input,
                                   realtime_transcription_session_audio_input_turn_detection,
                                   realtime_transcription_session_create_request,
                                   realtime_transcription_session_create_response)
from pydantic import TypeAdapter, ValidationError
from websockets.sync.server import serve

from serve.core.options import TranscribeOptions, parse_options
from serve.core.results import Segment, Word
from serve.errors import InvalidParameterError, ServiceFaultError, UnsupportedOptionError
from serve.live import protocol as p
from serve.live.protocol import (MAX_FRAME_BYTES, MAX_TEXT_FRAME_BYTES, Append, AudioFormat, Clear, Commit,
                                 ProtocolError, SessionConfig, TurnDetection, Update, cleared, committed, completed,
                                 delta, error_event, new_id, parse_client_event, partial, server_event,
                                 session_created, session_updated, speech_started, speech_stopped)

DEFAULT = SessionConfig()
SERVER_EVENTS = TypeAdapter(RealtimeServerEvent)


def parse(event, config: SessionConfig = DEFAULT):
    return parse_client_event(event if isinstance(event, str) else json.dumps(event), config)


def update(session: dict, config: SessionConfig = DEFAULT, kind: str = "session.update") -> SessionConfig:
    _, event = parse({"type": kind, "session": session}, config)
    assert isinstance(event, Update)
    return event.config


def ga(**input_fields) -> dict:
    """A GA transcription session whose audio.input holds ``input_fields``."""
    return {"type": "transcription", "audio": {"input": input_fields}}


def refused(event, config: SessionConfig = DEFAULT) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse(event, config)
    return caught.value


# ---- client events ------------------------------------------------------------------------------


def test_audio_buffer_events_and_their_ids():
    audio = bytes(range(256)) * 3
    assert parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode(),
                  "event_id": "evt_1"}) == ("evt_1", Append(audio))
    assert parse({"type": "input_audio_buffer.commit"}) == (None, Commit())
    assert parse({"type": "input_audio_buffer.clear", "event_id": "c"}) == ("c", Clear())
    assert parse({"type": "input_audio_buffer.append", "audio": ""}) == (None, Append(b""))


def test_the_specs_ga_update():
    config = update({"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "whisper-1", "language": "en", "prompt": "Kubernetes, SageMaker"},
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200,
                           "silence_duration_ms": 700}}},
        "whisper": {"partials": True, "segments": True, "options": {"word_timestamps": True, "beam_size": 5}}})
    assert config == SessionConfig(
        audio=AudioFormat("pcm16", 24000), turn_detection=TurnDetection(0.6, 200, 700),
        options=TranscribeOptions(language="en", initial_prompt="Kubernetes, SageMaker", word_timestamps=True,
                                  beam_size=5),
        model="whisper-1", partials=True, segments=True)


@pytest.mark.parametrize("fmt, expected", [
    ({"type": "audio/pcm"}, AudioFormat("pcm16", 24000)),  # OpenAI's default rate
    ({"type": "audio/pcm", "rate": 16000}, AudioFormat("pcm16", 16000)),
    ({"type": "audio/pcm", "rate": 24000.0}, AudioFormat("pcm16", 24000)),
    ({"type": "audio/pcmu"}, AudioFormat("pcmu", 8000)),
    ({"type": "audio/pcma", "rate": 8000}, AudioFormat("pcma", 8000)),
])
def test_ga_formats(fmt, expected):
    assert update(ga(format=fmt)).audio == expected


def test_the_specs_beta_update():
    config = update({"input_audio_format": "g711_ulaw",
                     "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "fr", "prompt": ""},
                     "turn_detection": None, "whisper": {"options": {"task": "translate"}}},
                    kind="transcription_session.update")
    assert config == SessionConfig(audio=AudioFormat("pcmu", 8000), turn_detection=None, model="gpt-4o-transcribe",
                                   options=TranscribeOptions(language="fr", task="translate"))


@pytest.mark.parametrize("name, expected", [("pcm16", AudioFormat("pcm16", 24000)),  # beta pcm16 is 24 kHz
                                            ("g711_ulaw", AudioFormat("pcmu", 8000)),
                                            ("g711_alaw", AudioFormat("pcma", 8000))])
def test_beta_formats(name, expected):
    assert update({"input_audio_format": name}, kind="transcription_session.update").audio == expected


def test_an_update_changes_only_what_it_names():
    start = update(ga(format={"type": "audio/pcmu"}, transcription={"language": "de", "prompt": "Hallo"},
                      turn_detection={"silence_duration_ms": 900}) | {"whisper": {
                          "partials": True, "options": {"word_timestamps": True, "beam_size": 3}}})
    assert start.turn_detection == TurnDetection(silence_duration_ms=900)

    config = update(ga(transcription={"language": "fr"}), start)
    assert config == SessionConfig(audio=start.audio, turn_detection=start.turn_detection, partials=True,
                                   options=TranscribeOptions(language="fr", initial_prompt="Hallo",
                                                             word_timestamps=True, beam_size=3))
    # A field named with null (or "auto" for the language) goes back to unset; the others stay.
    assert update(ga(transcription={"language": None}), config).options.language is None
    assert update(ga(transcription={"language": "auto"}), config).options.language is None
    assert update(ga(transcription={"prompt": ""}), config).options.initial_prompt is None
    assert update({"type": "transcription", "whisper": {"options": {"beam_size": None}}}, config).options == \
        TranscribeOptions(language="fr", initial_prompt="Hallo", word_timestamps=True)
    assert update({"type": "transcription", "whisper": {"partials": None}}, config).partials is False
    # turn_detection: fields merge over the current ones; null turns VAD off; an object turns it back on.
    assert update(ga(turn_detection={"threshold": 0.3}), config).turn_detection == TurnDetection(0.3, 300, 900)
    off = update(ga(turn_detection=None), config)
    assert off.turn_detection is None and off.options == config.options
    assert update(ga(turn_detection={"type": "server_vad"}), off).turn_detection == TurnDetection()
    assert update({"type": "transcription"}, config) == config


def test_the_session_object_sent_back_is_the_same_session():
    """The session object of session.created/updated, sent back as an update, is that session again."""
    config = SessionConfig(audio=AudioFormat("pcma", 8000), turn_detection=TurnDetection(0.4, 100, 250),
                           options=TranscribeOptions(language="es", initial_prompt="hola", temperature=(0.0, 0.4),
                                                     word_timestamps=True, vad_filter=False, chunk_length_s=10.0),
                           model="whisper-1", partials=True, segments=True)
    assert update(session_updated(config, "sess_1")["session"]) == config
    assert update(session_created(DEFAULT, "sess_1")["session"], config) == DEFAULT


def test_what_openai_defines_but_we_do_not_use_is_accepted_and_ignored():
    session = {"type": "transcription", "include": ["item.input_audio_transcription.logprobs"],
               "output_modalities": ["text"], "instructions": "be brief", "tools": [], "model": "gpt-realtime",
               "audio": {"output": {"voice": "alloy"}, "input": {
                   "noise_reduction": {"type": "near_field"},
                   "transcription": {"model": "gpt-4o-transcribe", "delay": "low", "keywords": ["x"],
                                     "languages": ["en"]},
                   "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": False,
                                      "idle_timeout_ms": 5000}}}}
    assert update(session) == SessionConfig(model="gpt-4o-transcribe")
    beta = {"include": [], "modalities": ["text"], "client_secret": {"expires_at": {"seconds": 60}},
            "input_audio_noise_reduction": {"type": "far_field"}, "turn_detection": {"eagerness": "low"}}
    assert update(beta, kind="transcription_session.update") == DEFAULT


def _fields(*models) -> set[str]:
    return {name for m in models for name in m.model_fields}


def test_the_ignored_fields_are_openais_own():
    """Every field OpenAI's session shapes define is used or ignored, and nothing is ignored that OpenAI does
    not define: the tables track the installed openai package (a new field shows up here)."""
    tables = [
        (("type", "audio", "whisper"), p._GA_SESSION_IGNORED,
         _fields(realtime_transcription_session_create_request.RealtimeTranscriptionSessionCreateRequest,
                 realtime_transcription_session_create_response.RealtimeTranscriptionSessionCreateResponse,
                 realtime_session_create_request.RealtimeSessionCreateRequest)),
        (("input",), p._GA_AUDIO_IGNORED, _fields(realtime_audio_config.RealtimeAudioConfig)),
        (("format", "transcription", "turn_detection"), p._GA_INPUT_IGNORED,
         _fields(realtime_transcription_session_audio_input.RealtimeTranscriptionSessionAudioInput)),
        (("model", "language", "prompt"), p._TRANSCRIPTION_IGNORED,
         _fields(audio_transcription.AudioTranscription, beta_update.SessionInputAudioTranscription)),
        (("type", "threshold", "prefix_padding_ms", "silence_duration_ms"), p._TURN_DETECTION_IGNORED,
         _fields(realtime_transcription_session_audio_input_turn_detection.ServerVad,
                 realtime_transcription_session_audio_input_turn_detection.SemanticVad,
                 beta_update.SessionTurnDetection)),
        (("input_audio_format", "input_audio_transcription", "turn_detection", "whisper"), p._BETA_SESSION_IGNORED,
         _fields(beta_update.Session) | {"id", "object", "expires_at"}),
    ]
    for used, ignored, openai_fields in tables:
        assert openai_fields <= set(used) | ignored, openai_fields - set(used) - ignored
        assert ignored <= openai_fields, ignored - openai_fields
        assert not set(used) & ignored


ERRORS = [
    ('{"type": "input_audio_buffer.commit"', "invalid_json", None),
    ("[1, 2]", "invalid_event", None),
    ('"session.update"', "invalid_event", None),
    ({"event_id": "e"}, "missing_required_parameter", "type"),
    ({"type": 7}, "invalid_value", "type"),
    ({"type": "input_audio_buffer.flush"}, "invalid_event", "type"),
    ({"type": "response.create"}, "unsupported_event", "type"),
    ({"type": "conversation.item.create", "item": {}}, "unsupported_event", "type"),
    ({"type": "output_audio_buffer.clear"}, "unsupported_event", "type"),
    ({"type": "input_audio_buffer.commit", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAE"}, "invalid_value", "audio"),  # no padding
    ({"type": "input_audio_buffer.append", "audio": "AA E="}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAé="}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append", "audio": [0, 1]}, "invalid_value", "audio"),
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    ({"type": "session.update", "session": []}, "invalid_value", "session"),
    ({"type": "session.update", "session": {}}, "missing_required_parameter", "session.type"),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value", "session.type"),
    ({"type": "session.update", "session": {"type": "transcription", "langauge": "en"}}, "unknown_parameter",
     "session.langauge"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": None}}, "invalid_value",
     "session.audio"),
    ({"type": "session.update", "session": ga(format={"type": "audio/pcm", "rate": 44100})}, "invalid_value",
     "session.audio.input.format.rate"),
    ({"type": "session.update", "session": ga(format={"type": "audio/pcm", "rate": "fast"})}, "invalid_value",
     "session.audio.input.format.rate"),
    ({"type": "session.update", "session": ga(format={"type": "audio/pcmu", "rate": 16000})}, "invalid_value",
     "session.audio.input.format.rate"),
    ({"type": "session.update", "session": ga(format={"type": "audio/opus"})}, "invalid_value",
     "session.audio.input.format.type"),
    ({"type": "session.update", "session": ga(format={"rate": 24000})}, "invalid_value",
     "session.audio.input.format.type"),
    ({"type": "session.update", "session": ga(format="pcm16")}, "invalid_value", "session.audio.input.format"),
    ({"type": "session.update", "session": ga(turn_detection={"type": "semantic_vad"})}, "invalid_value",
     "session.audio.input.turn_detection.type"),
    ({"type": "session.update", "session": ga(turn_detection={"threshold": 1.5})}, "invalid_value",
     "session.audio.input.turn_detection.threshold"),
    ({"type": "session.update", "session": ga(turn_detection={"silence_duration_ms": -1})}, "invalid_value",
     "session.audio.input.turn_detection.silence_duration_ms"),
    ({"type": "session.update", "session": ga(turn_detection={"prefix_padding_ms": 12.5})}, "invalid_value",
     "session.audio.input.turn_detection.prefix_padding_ms"),
    ({"type": "session.update", "session": ga(turn_detection={"silence": 500})}, "unknown_parameter",
     "session.audio.input.turn_detection.silence"),
    ({"type": "session.update", "session": ga(transcription=None)}, "invalid_value",
     "session.audio.input.transcription"),
    ({"type": "session.update", "session": ga(transcription={"language": "english"})}, "invalid_value",
     "session.audio.input.transcription.language"),
    ({"type": "session.update", "session": ga(transcription={"prompt": 5})}, "invalid_value",
     "session.audio.input.transcription.prompt"),
    ({"type": "session.update", "session": ga(transcription={"language": "en"}) | {
        "whisper": {"options": {"language": "fr"}}}}, "invalid_value", "session.whisper.options.language"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"partial": True}}},
     "unknown_parameter", "session.whisper.partial"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"segments": "maybe"}}},
     "invalid_value", "session.whisper.segments"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"options": None}}},
     "invalid_value", "session.whisper.options"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"options": {"beam_size": 0}}}},
     "invalid_value", "session.whisper.options.beam_size"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"options": {"word_timestamp": 1}}}},
     "unknown_parameter", "session.whisper.options.word_timestamp"),
    ({"type": "session.update", "session": {"type": "transcription", "whisper": {"options": {"batch_size": 8}}}},
     "unknown_parameter", "session.whisper.options.batch_size"),
    ({"type": "transcription_session.update", "session": {"input_audio_format": "pcm24"}}, "invalid_value",
     "session.input_audio_format"),
    ({"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
                                                          "audio": {}}}, "unknown_parameter", "session.audio"),
    ({"type": "transcription_session.update", "session": {"turn_detection": {"threshold": "high"}}},
     "invalid_value", "session.turn_detection.threshold"),
    ({"type": "transcription_session.update", "session": {"input_audio_transcription": {"language": 1}}},
     "invalid_value", "session.input_audio_transcription.language"),
]


@pytest.mark.parametrize("event, code, param", ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(ERRORS)])
def test_bad_events_are_refused_with_the_field_named(event, code, param):
    if isinstance(event, dict):
        event = {**event, "event_id": "evt_42"} if event.get("event_id") is None else event
    error = refused(event)
    assert (error.code, error.param) == (code, param), error.message
    assert error.error_type == "invalid_request_error" and error.message
    assert error.event_id == (event.get("event_id") if isinstance(event, dict) else None)
    if param == "type" and code in ("invalid_event", "unsupported_event"):
        assert "transcription server" in error.message


def test_a_refused_update_changes_nothing():
    """The session's config is the caller's: a refusal returns nothing, so nothing half-applied can leak."""
    config = update(ga(transcription={"language": "en"}))
    refused({"type": "session.update", "session": ga(format={"type": "audio/pcmu"}, turn_detection={"threshold": 9})},
            config)
    assert config.audio == DEFAULT.audio


def test_a_non_string_event_id_is_refused():
    error = refused({"type": "input_audio_buffer.commit", "event_id": 5})
    assert (error.code, error.param, error.event_id) == ("invalid_value", "event_id", None)


@pytest.mark.parametrize("options", [{"beam_size": 0}, {"word_timestamp": True}, {"batch_size": 4},
                                     {"temperature": "0.5,0.2"}, {"language": "en", "Language": "fr"}])
def test_options_are_refused_with_the_invocations_messages(options):
    with pytest.raises(InvalidParameterError) as invocations:
        parse_options(options, source="session.whisper.options")
    error = refused({"type": "session.update", "session": {"type": "transcription", "whisper": {"options": options}}})
    assert error.message == invocations.value.message


def test_every_invocations_option_is_taken():
    options = {"language": "fr", "task": "translate", "initial_prompt": "p", "temperature": [0, 0.2],
               "beam_size": 2, "word_timestamps": "true", "vad_filter": False,
               "condition_on_previous_text": True, "chunk_length_s": 12,
               # taken here as everywhere; the server refuses diarize in a session (tests/live/test_live_server.py)
               "diarize": False, "num_speakers": 2, "min_speakers": 1, "max_speakers": 3}
    assert set(options) == set(TranscribeOptions.names())
    config = update({"type": "transcription", "whisper": {"options": options}})
    assert config.options == parse_options(options)[0]


def test_oversized_frames():
    assert MAX_TEXT_FRAME_BYTES > 4 * MAX_FRAME_BYTES // 3  # an append of the largest audio frame fits
    error = refused(" " * (MAX_TEXT_FRAME_BYTES + 1))
    assert error.code == "frame_too_large"
    error = refused("é" * (MAX_TEXT_FRAME_BYTES // 2 + 1))  # characters under the limit, bytes over it
    assert error.code == "frame_too_large"
    largest = base64.b64encode(bytes(MAX_FRAME_BYTES)).decode()
    assert len(parse({"type": "input_audio_buffer.append", "audio": largest})[1].audio) == MAX_FRAME_BYTES
    over = base64.b64encode(bytes(MAX_FRAME_BYTES + 1)).decode()
    error = refused({"type": "input_audio_buffer.append", "audio": over, "event_id": "big"})
    assert (error.code, error.param, error.event_id) == ("frame_too_large", "audio", "big")


# ---- server events ------------------------------------------------------------------------------


CONFIG_24K = SessionConfig(audio=AudioFormat("pcm16", 24000), model="whisper-1",
                           options=TranscribeOptions(language="en", initial_prompt="hi", word_timestamps=True,
                                                     temperature=(0.0, 0.2)),
                           partials=True, segments=True)
SEGMENTS = [Segment(id=0, start=12.0, end=13.5, text=" Hello there.", avg_logprob=-0.2,
                    words=(Word(12.0, 12.6, " Hello", 0.9), Word(12.7, 13.5, " there.", 0.8))),
            Segment(id=1, start=13.5, end=14.0, text=" Bye.")]


def client_reads(event: dict):
    """What ``conn.recv()`` of the official client makes of the event (its parser uses no connection)."""
    return RealtimeConnection.parse_event(None, json.dumps(event))  # type: ignore[arg-type]


def every_builder(config: SessionConfig) -> list[dict]:
    item = new_id("item")
    return [
        session_created(config, new_id("sess")),
        session_updated(config),
        session_updated(SessionConfig(audio=AudioFormat("pcmu", 8000), turn_detection=None), "sess_1"),
        session_updated(SessionConfig(audio=AudioFormat("pcma", 8000))),
        speech_started(item, 1200),
        speech_stopped(item, 2950),
        committed(item, None),
        committed(item, "item_previous"),
        cleared(),
        delta(item, " Hello"),
        completed(item, " Hello there. Bye.", audio_seconds=2.5),
        completed(item, " Hello there. Bye.", SEGMENTS, audio_seconds=2.0),
        completed(item, "", [{"start": 1.0, "end": 2.0, "text": " x"}], audio_seconds=1.0),
        error_event(ProtocolError("invalid_value", "no", "session.type", "evt_1")),
        error_event(ProtocolError("server_busy", "full", error_type="server_error")),
        error_event(UnsupportedOptionError("beam_size=5 is not supported", param="beam_size")),
        error_event(RuntimeError("boom")),
    ]


def test_every_server_event_is_valid_under_openais_own_models():
    for event in every_builder(CONFIG_24K):
        parsed = SERVER_EVENTS.validate_python(json.loads(json.dumps(event)))  # strict, and JSON on the way
        assert parsed.type == event["type"]
        assert re.fullmatch(r"event_[0-9a-f]{24}", parsed.event_id)
    ids = [e["event_id"] for e in every_builder(CONFIG_24K) + every_builder(CONFIG_24K)]
    assert len(set(ids)) == len(ids)


def test_a_16_khz_session_is_outside_openais_schema_only_in_its_rate():
    """OpenAI's schema knows PCM at 24 kHz only; our default is 16 kHz, and the session says so. A strict
    validator objects to the rate, and to nothing else; the official client (lenient) keeps it."""
    event = session_created(DEFAULT, "sess_1")
    with pytest.raises(ValidationError) as caught:
        SessionCreatedEvent.model_validate(event)
    # The session is a union (realtime | transcription), its format another (pcm | pcmu | pcma): under the
    # transcription session's PCM, the one complaint is the rate.
    wrong = [e["loc"][2:] for e in caught.value.errors()
             if e["loc"][1] == "RealtimeTranscriptionSessionCreateRequest" and "AudioPCM" in e["loc"]]
    assert wrong == [("audio", "input", "format", "AudioPCM", "rate")], caught.value
    assert SessionCreatedEvent.model_validate(session_created(CONFIG_24K, "sess_1"))
    assert client_reads(event).session.audio.input.format.rate == 16000


def test_partials_are_an_extension_the_official_client_passes_on():
    event = partial("item_1", " and then")
    with pytest.raises(ValidationError):
        SERVER_EVENTS.validate_python(event)  # not an OpenAI event type
    read = client_reads(event)
    assert (read.type, read.item_id, read.text) == (event["type"], "item_1", " and then")


def test_builders_shapes():
    item = "item_1"
    assert delta(item, " hi") | {"event_id": "e"} == {
        "type": "conversation.item.input_audio_transcription.delta", "event_id": "e", "item_id": item,
        "content_index": 0, "delta": " hi"}
    done = completed(item, " Hello there. Bye.", SEGMENTS, audio_seconds=2)
    assert done["usage"] == {"type": "duration", "seconds": 2.0}
    assert done["segments"] == [
        {"start": 12.0, "end": 13.5, "text": " Hello there.",
         "words": [{"start": 12.0, "end": 12.6, "word": " Hello", "probability": 0.9},
                   {"start": 12.7, "end": 13.5, "word": " there.", "probability": 0.8}]},
        {"start": 13.5, "end": 14.0, "text": " Bye."}]
    assert "segments" not in completed(item, "x") and "usage" not in completed(item, "x")
    assert committed(item)["previous_item_id"] is None
    assert server_event("x.y", a=1)["a"] == 1
    session = session_created(CONFIG_24K, "sess_9")["session"]
    assert session["id"] == "sess_9" and session["type"] == "transcription"
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "en", "prompt": "hi"}
    assert session["whisper"] == {"partials": True, "segments": True, "options": {
        "task": None, "temperature": [0.0, 0.2], "beam_size": None, "word_timestamps": True, "vad_filter": None,
        "condition_on_previous_text": None, "chunk_length_s": None, "diarize": None, "num_speakers": None,
        "min_speakers": None, "max_speakers": None}}
    assert "id" not in session_updated(CONFIG_24K)["session"]


def test_error_events():
    error = error_event(ProtocolError("invalid_value", "bad rate", "session.audio.input.format.rate", "evt_1"))
    assert error["type"] == "error" and error["error"] == {
        "type": "invalid_request_error", "code": "invalid_value", "message": "bad rate",
        "param": "session.audio.input.format.rate", "event_id": "evt_1"}
    assert error_event(ProtocolError("invalid_audio", "odd"), event_id="evt_2")["error"]["event_id"] == "evt_2"
    unsupported = error_event(UnsupportedOptionError("beam_size=5 is not supported by x", param="beam_size"),
                              "evt_3")["error"]
    assert unsupported == {"type": "invalid_request_error", "code": "unsupported_option",
                           "message": "beam_size=5 is not supported by x", "param": "beam_size", "event_id": "evt_3"}
    fault = error_event(ServiceFaultError("the engine stopped"))["error"]
    assert (fault["type"], fault["code"], fault["message"]) == ("server_error", "service_unavailable",
                                                                "the engine stopped")
    internal = error_event(KeyError("/opt/ml/model/secret"))["error"]
    assert (internal["type"], internal["code"]) == ("server_error", "server_error")
    assert "secret" not in internal["message"]


# ---- the official clients, over a real socket -------------------------------------------------------


@contextmanager
def transcription_server(log: list):
    """A loopback stand-in for the live server: every frame through parse_client_event, answered with the
    builders (a commit gets committed, one delta, completed)."""

    def handler(ws):
        config, previous = SessionConfig(), None
        ws.send(json.dumps(session_created(config, new_id("sess"))))
        for message in ws:
            try:
                _, event = parse_client_event(message, config)
            except ProtocolError as exc:
                ws.send(json.dumps(error_event(exc)))
                continue
            log.append(event)
            if isinstance(event, Update):
                config = event.config
                ws.send(json.dumps(session_updated(config)))
            elif isinstance(event, Commit):
                item = new_id("item")
                for out in (committed(item, previous), delta(item, " Hello"),
                            completed(item, " Hello there.", audio_seconds=1.5)):
                    ws.send(json.dumps(out))
                previous = item
            elif isinstance(event, Clear):
                ws.send(json.dumps(cleared()))

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v1"
        finally:
            server.shutdown()
            thread.join(10)


@pytest.mark.timeout(60)
def test_the_official_ga_client_talks_to_it():
    log: list = []
    with transcription_server(log) as url:
        client = OpenAI(api_key="sk-test", websocket_base_url=url)
        with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
            created = conn.recv()
            conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000}, "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "whisper-1", "language": "en", "prompt": ""},
                "turn_detection": None}}, "include": ["item.input_audio_transcription.logprobs"],
                # The extension, through the official client's own call (its TypedDict passes it on).
                "whisper": {"segments": True, "options": {"word_timestamps": True}}})
            updated = conn.recv()
            conn.input_audio_buffer.append(audio=base64.b64encode(b"\x01\x00" * 480).decode())
            conn.input_audio_buffer.commit()
            turn = [conn.recv() for _ in range(3)]
            conn.input_audio_buffer.clear()
            gone = conn.recv()
            conn.response.create()
            error = conn.recv()
    assert created.type == "session.created" and created.session.type == "transcription"
    assert created.session.audio.input.format.rate == 16000
    assert updated.type == "session.updated" and updated.session.audio.input.format.rate == 24000
    assert updated.session.audio.input.turn_detection is None
    assert [e.type for e in turn] == ["input_audio_buffer.committed",
                                      "conversation.item.input_audio_transcription.delta",
                                      "conversation.item.input_audio_transcription.completed"]
    assert turn[2].transcript == " Hello there." and turn[2].usage.seconds == 1.5
    assert gone.type == "input_audio_buffer.cleared"
    assert error.type == "error" and error.error.code == "unsupported_event"
    assert log == [Update(SessionConfig(audio=AudioFormat("pcm16", 24000), turn_detection=None, model="whisper-1",
                                        options=TranscribeOptions(language="en", word_timestamps=True),
                                        segments=True)),
                   Append(b"\x01\x00" * 480), Commit(), Clear()]


@pytest.mark.timeout(60)
def test_the_official_beta_client_talks_to_it():
    log: list = []
    with transcription_server(log) as url:
        client = OpenAI(api_key="sk-test", websocket_base_url=url)
        with client.beta.realtime.connect(model="whisper-1") as conn:
            created = conn.recv()
            conn.transcription_session.update(session={
                "input_audio_format": "g711_ulaw", "input_audio_noise_reduction": {"type": "far_field"},
                "input_audio_transcription": {"model": "whisper-1", "language": "de"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}})
            updated = conn.recv()
            conn.input_audio_buffer.append(audio=base64.b64encode(b"\xff" * 160).decode())
            conn.input_audio_buffer.commit()
            turn = [conn.recv() for _ in range(3)]
    assert created.type == "session.created" and updated.type == "session.updated"
    assert [e.type for e in turn] == ["input_audio_buffer.committed",
                                      "conversation.item.input_audio_transcription.delta",
                                      "conversation.item.input_audio_transcription.completed"]
    assert turn[2].transcript == " Hello there."
    assert log == [Update(SessionConfig(audio=AudioFormat("pcmu", 8000), model="whisper-1",
                                        turn_detection=TurnDetection(silence_duration_ms=800),
                                        options=TranscribeOptions(language="de"))),
                   Append(b"\xff" * 160), Commit()]
