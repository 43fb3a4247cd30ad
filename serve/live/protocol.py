"""The live wire protocol: client events in, session configuration, server events out.

The contract (see the live spec) is OpenAI's Realtime API in its
transcription-only form: the GA ``session.update`` with ``session.type``
``"transcription"``, the beta ``transcription_session.update``, and the
``input_audio_buffer`` events. Server events take OpenAI's GA shapes, so the
official ``openai`` client reads them. Our additions are opt-in: a ``whisper``
object inside ``session`` (partials, segments, any /invocations option), and
the ``conversation.item.input_audio_transcription.partial`` event it enables.
An OpenAI client never sends the one, so it never gets the other.

Nothing here touches a socket or an engine: one text frame in, one event (or
one ``ProtocolError``) out. A bad event costs the client one ``error`` event,
never the connection.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..core.options import TranscribeOptions, as_bool, as_float, as_int, normalize_name, parse_options
from ..core.results import Segment, word_dict
from ..errors import (AudioDecodeError, InvalidParameterError, InvalidRequestError, NotAcceptableError,
                      PayloadTooLargeError, WhisperServeError)

MAX_FRAME_BYTES = 15 * 1024 * 1024
"""Most audio one frame may carry (a binary frame, or the decoded audio of one append): OpenAI's own
limit for one ``input_audio_buffer.append``, so that no client written against OpenAI is refused.
That is about 5.5 minutes of 24 kHz PCM16 (33 of G.711); keeping a live client near real time is the
session's pacing's job, not this bound's, which only caps what one frame can make the server hold."""

MAX_TEXT_FRAME_BYTES = 4 * -(-MAX_FRAME_BYTES // 3) + 64 * 1024
"""Largest text frame: an append of MAX_FRAME_BYTES in base64, plus room for the JSON around it."""

MAX_TURN_DETECTION_MS = 30_000
"""Upper bound of prefix_padding_ms and silence_duration_ms: Whisper's window. A pause or padding
longer than the longest audio the model sees at once is a client's mistake, not a setting."""

PCM_RATES = (16000, 24000)
"""PCM16 rates taken: OpenAI's 24 kHz, and Whisper's own 16 kHz (no resampling; our default)."""
G711_RATE = 8000

CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear")
"""Every client event type this server acts on."""

_NOT_HERE = ("response.", "conversation.", "output_audio_buffer.")
"""Prefixes of OpenAI's conversation events: real Realtime events, but a transcription server has no
conversation to answer in (told apart from unknown types only in the error's code)."""


class ProtocolError(Exception):
    """One client event the server cannot act on: answered with one ``error`` event; the socket stays open.

    ``code`` is the OpenAI error's machine-readable code, ``param`` the dotted path of the field to blame
    (``session.audio.input.format.rate``), ``event_id`` the client event's id when it had one.
    """

    def __init__(self, code: str, message: str, param: Optional[str] = None, event_id: Optional[str] = None,
                 *, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.error_type = error_type
        """OpenAI's error ``type``: ``invalid_request_error`` (the client's event) or ``server_error``."""


# ---- session configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFormat:
    """The session's input audio: little-endian mono PCM16 at 16 or 24 kHz, or G.711 at 8 kHz."""

    encoding: str
    """``pcm16``, ``pcmu`` (G.711 mu-law) or ``pcma`` (G.711 A-law)."""
    rate: int
    """Samples per second: 16000 or 24000 for pcm16, 8000 for G.711."""

    def __post_init__(self):
        allowed = PCM_RATES if self.encoding == "pcm16" else (G711_RATE,) if self.encoding in ("pcmu", "pcma") else ()
        if self.rate not in allowed:
            raise ValueError(f"no audio format {self.encoding} at {self.rate} Hz")

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1


@dataclass(frozen=True)
class TurnDetection:
    """Server VAD: a turn ends after ``silence_duration_ms`` of silence (OpenAI's ``server_vad`` fields)."""

    threshold: float = 0.5
    """Speech probability above which audio counts as speech, 0 to 1."""
    prefix_padding_ms: int = 300
    """Audio kept before the detected start of speech."""
    silence_duration_ms: int = 500
    """Silence that ends a turn."""


@dataclass(frozen=True)
class SessionConfig:
    """A live session's settings: the defaults, then each update merged over them."""

    audio: AudioFormat = AudioFormat("pcm16", 16000)
    turn_detection: Optional[TurnDetection] = TurnDetection()
    """None: no server VAD; a turn ends only when the client commits."""
    options: TranscribeOptions = TranscribeOptions()
    """This session's transcription options (unset ones: the server's defaults). ``language`` and
    ``initial_prompt`` come from OpenAI's transcription ``language`` and ``prompt``, the rest from
    ``whisper.options``."""
    model: Optional[str] = None
    """The transcription model the client named: accepted and echoed, not used (the server has one)."""
    partials: bool = False
    """Send ``...transcription.partial`` events (the unstable tail), an extension."""
    segments: bool = False
    """Add session-absolute ``segments`` to each ``...transcription.completed``, an extension."""

    def describe(self) -> dict:
        """The ``session`` object of ``session.created``/``session.updated``: OpenAI's GA transcription
        session (``type: "transcription"``), plus our ``whisper`` object."""
        td = self.turn_detection
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "audio": {"input": {
                "format": _format_json(self.audio),
                # None is applied; a requested one is accepted and ignored, and this says so.
                "noise_reduction": None,
                "transcription": {"model": self.model, "language": self.options.language,
                                  "prompt": self.options.initial_prompt},
                "turn_detection": None if td is None else {
                    "type": "server_vad", "threshold": td.threshold, "prefix_padding_ms": td.prefix_padding_ms,
                    "silence_duration_ms": td.silence_duration_ms},
            }},
            "whisper": {"partials": self.partials, "segments": self.segments, "options": _options_json(self.options)},
        }


def _format_json(fmt: AudioFormat) -> dict:
    if fmt.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": f"audio/{fmt.encoding}"}


def _options_json(options: TranscribeOptions) -> dict:
    """Every option but language and prompt (shown where OpenAI puts them); null: the server's default.
    All of them, so that the session object sent back as an update restores exactly this session."""
    out = {k: getattr(options, k) for k in TranscribeOptions.names() if k not in ("language", "initial_prompt")}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# ---- client events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """``session.update`` or ``transcription_session.update``: the whole new configuration."""

    config: SessionConfig


@dataclass(frozen=True)
class Append:
    """``input_audio_buffer.append``: raw bytes in the session's format (base64-decoded)."""

    audio: bytes


@dataclass(frozen=True)
class Commit:
    """``input_audio_buffer.commit``: end the current turn now."""


@dataclass(frozen=True)
class Clear:
    """``input_audio_buffer.clear``: drop the current turn's uncommitted audio."""


ClientEvent = Union[Update, Append, Commit, Clear]


def parse_client_event(text: str, config: SessionConfig) -> tuple[Optional[str], ClientEvent]:
    """One text frame -> (the event's ``event_id`` or None, the event). Raises ProtocolError.

    ``config`` is the session's current configuration: an update merges over it, and the fields it
    does not give keep their values (OpenAI's rule). The error carries the event's id when it had one.
    """
    if len(text) > MAX_TEXT_FRAME_BYTES or (not text.isascii() and len(text.encode("utf-8", "replace"))
                                            > MAX_TEXT_FRAME_BYTES):
        raise ProtocolError("frame_too_large", f"a text frame may hold at most {MAX_TEXT_FRAME_BYTES} bytes "
                            f"(an append of {MAX_FRAME_BYTES} bytes of audio); send the audio in smaller appends")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"the text frame is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ProtocolError("invalid_event", f'a client event is a JSON object with a "type", got {_kind(event)}')
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolError("invalid_value", f"event_id must be a string, got {_kind(event_id)}", "event_id")
    try:
        return event_id, _parse_event(event, config)
    except ProtocolError as exc:
        exc.event_id = event_id
        raise


def _parse_event(event: dict, config: SessionConfig) -> ClientEvent:
    kind = event.get("type")
    if kind is None:
        raise ProtocolError("missing_required_parameter", 'the event has no "type"', "type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_value", f"type must be a string, got {_kind(kind)}", "type")
    if kind not in CLIENT_EVENTS:
        code = "unsupported_event" if kind.startswith(_NOT_HERE) else "invalid_event"
        known = "" if code == "unsupported_event" else "unknown event type; "
        raise ProtocolError(code, f"{kind}: {known}this is a transcription server (Whisper), with no conversation "
                            f"or responses. Its client events: {', '.join(CLIENT_EVENTS)}", "type")
    fields = {"session.update": ("session",), "transcription_session.update": ("session",),
              "input_audio_buffer.append": ("audio",)}.get(kind, ())
    _check_keys(event, "", ("type", "event_id", *fields), ())
    for name in fields:
        if name not in event:
            raise ProtocolError("missing_required_parameter", f"{kind} needs {name!r}", name)
    if kind == "session.update":
        return Update(_ga_session(event["session"], config))
    if kind == "transcription_session.update":
        return Update(_beta_session(event["session"], config))
    if kind == "input_audio_buffer.append":
        return Append(_audio(event["audio"]))
    return Commit() if kind == "input_audio_buffer.commit" else Clear()


def _audio(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("invalid_value", f"audio must be a base64 string, got {_kind(value)}", "audio")
    if len(value) > 4 * -(-MAX_FRAME_BYTES // 3):
        raise ProtocolError("frame_too_large", f"one append may carry at most {MAX_FRAME_BYTES} bytes of audio",
                            "audio")
    try:
        audio = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_value", "audio is not valid base64 (standard alphabet, with padding)",
                            "audio") from None
    if len(audio) > MAX_FRAME_BYTES:  # the length check above allows up to 2 bytes more
        raise ProtocolError("frame_too_large", f"one append may carry at most {MAX_FRAME_BYTES} bytes of audio",
                            "audio")
    return audio


# What OpenAI defines in a session that this server does not use: accepted and ignored, never an error
# (a client written for OpenAI sends them). Anything else unknown is refused: a typo must not pass silently.
_GA_SESSION_IGNORED = frozenset({
    "include", "id", "object", "expires_at",  # the session object as OpenAI returns it, sent back
    # A realtime (conversation) session's fields: nothing here makes responses.
    "model", "instructions", "output_modalities", "max_output_tokens", "parallel_tool_calls", "prompt",
    "reasoning", "tool_choice", "tools", "tracing", "truncation",
})
_GA_AUDIO_IGNORED = frozenset({"output"})
_GA_INPUT_IGNORED = frozenset({"noise_reduction"})
_BETA_SESSION_IGNORED = frozenset({"include", "client_secret", "input_audio_noise_reduction", "modalities",
                                   "id", "object", "expires_at"})
_TRANSCRIPTION_IGNORED = frozenset({"delay", "keywords", "languages"})
_TURN_DETECTION_IGNORED = frozenset({"create_response", "interrupt_response", "idle_timeout_ms", "eagerness"})

_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_BETA_FORMATS = {"pcm16": AudioFormat("pcm16", 24000), "g711_ulaw": AudioFormat("pcmu", G711_RATE),
                 "g711_alaw": AudioFormat("pcma", G711_RATE)}
"""Beta names: its pcm16 is 24 kHz, G.711 8 kHz."""


def _ga_session(value: Any, config: SessionConfig) -> SessionConfig:
    session = _object(value, "session")
    _check_keys(session, "session", ("type", "audio", "whisper"), _GA_SESSION_IGNORED)
    if "type" not in session:
        raise ProtocolError("missing_required_parameter", 'session.type is required: "transcription"', "session.type")
    if session["type"] != "transcription":
        raise ProtocolError("invalid_value", f'session.type must be "transcription" (this server only transcribes), '
                            f"got {session['type']!r}", "session.type")
    fmt, td, transcription = config.audio, config.turn_detection, None
    if "audio" in session:
        audio = _object(session["audio"], "session.audio")
        _check_keys(audio, "session.audio", ("input",), _GA_AUDIO_IGNORED)
        if "input" in audio:
            path = "session.audio.input"
            inp = _object(audio["input"], path)
            _check_keys(inp, path, ("format", "transcription", "turn_detection"), _GA_INPUT_IGNORED)
            if "format" in inp:
                fmt = _ga_format(inp["format"], f"{path}.format")
            if "turn_detection" in inp:
                td = _turn_detection(inp["turn_detection"], config.turn_detection, f"{path}.turn_detection")
            if "transcription" in inp:
                transcription = _transcription(inp["transcription"], f"{path}.transcription")
    return _merged(config, fmt, td, transcription, session)


def _beta_session(value: Any, config: SessionConfig) -> SessionConfig:
    session = _object(value, "session")
    _check_keys(session, "session", ("input_audio_format", "input_audio_transcription", "turn_detection", "whisper"),
                _BETA_SESSION_IGNORED)
    fmt, td, transcription = config.audio, config.turn_detection, None
    if "input_audio_format" in session:
        name = session["input_audio_format"]
        if not isinstance(name, str) or name not in _BETA_FORMATS:
            raise ProtocolError("invalid_value", f"session.input_audio_format must be one of "
                                f"{', '.join(_BETA_FORMATS)}, got {name!r}", "session.input_audio_format")
        fmt = _BETA_FORMATS[name]
    if "turn_detection" in session:
        td = _turn_detection(session["turn_detection"], config.turn_detection, "session.turn_detection")
    if "input_audio_transcription" in session:
        transcription = _transcription(session["input_audio_transcription"], "session.input_audio_transcription")
    return _merged(config, fmt, td, transcription, session)


def _ga_format(value: Any, path: str) -> AudioFormat:
    fmt = _object(value, path)
    _check_keys(fmt, path, ("type", "rate"), ())
    kind = fmt.get("type")
    if kind not in _GA_FORMATS:
        raise ProtocolError("invalid_value", f"{path}.type must be one of {', '.join(_GA_FORMATS)}, got {kind!r}",
                            f"{path}.type")
    encoding, rate = _GA_FORMATS[kind], fmt.get("rate")
    if encoding == "pcm16":
        rate = 24000 if rate is None else _checked(as_int, f"{path}.rate", rate, 1)  # OpenAI's default: 24 kHz
        if rate not in PCM_RATES:
            raise ProtocolError("invalid_value", f"{path}.rate for audio/pcm must be 24000 (OpenAI's) or 16000, "
                                f"got {rate}", f"{path}.rate")
    elif rate is not None and rate != G711_RATE:
        raise ProtocolError("invalid_value", f"{kind} (G.711) is {G711_RATE} Hz; {path}.rate cannot be {rate!r}",
                            f"{path}.rate")
    return AudioFormat(encoding, rate if encoding == "pcm16" else G711_RATE)


def _turn_detection(value: Any, current: Optional[TurnDetection], path: str) -> Optional[TurnDetection]:
    """null turns server VAD off; an object changes the fields it gives (over the current or the defaults)."""
    if value is None:
        return None
    td = _object(value, path)
    _check_keys(td, path, ("type", "threshold", "prefix_padding_ms", "silence_duration_ms"), _TURN_DETECTION_IGNORED)
    kind = td.get("type")
    if kind not in (None, "server_vad"):
        raise ProtocolError("invalid_value", f"{path}.type: only server_vad is available (or turn_detection null: "
                            f"the client commits each turn), got {kind!r}", f"{path}.type")
    parsers: dict[str, Callable[[str, Any], Any]] = {
        "threshold": lambda name, v: as_float(name, v, 0.0, 1.0),
        "prefix_padding_ms": lambda name, v: as_int(name, v, 0, MAX_TURN_DETECTION_MS),
        "silence_duration_ms": lambda name, v: as_int(name, v, 0, MAX_TURN_DETECTION_MS),
    }
    changes = {name: _checked(parse, f"{path}.{name}", td[name])
               for name, parse in parsers.items() if td.get(name) is not None}
    return replace(current or TurnDetection(), **changes)


def _transcription(value: Any, path: str) -> tuple[dict, str]:
    if value is None:
        raise ProtocolError("invalid_value", f"{path} cannot be null: this server always transcribes", path)
    transcription = _object(value, path)
    _check_keys(transcription, path, ("model", "language", "prompt"), _TRANSCRIPTION_IGNORED)
    for name in ("model", "prompt"):
        if transcription.get(name) is not None and not isinstance(transcription[name], str):
            raise ProtocolError("invalid_value", f"{path}.{name} must be a string or null, got "
                                f"{_kind(transcription[name])}", f"{path}.{name}")
    return transcription, path


def _merged(config: SessionConfig, fmt: AudioFormat, td: Optional[TurnDetection],
            transcription: Optional[tuple[dict, str]], session: dict) -> SessionConfig:
    """The update's options over ``config``'s: an option the update names is replaced (null unsets it)."""
    model, partials, segments = config.model, config.partials, config.segments
    values: dict[str, Any] = {}
    where: dict[str, str] = {}  # option -> the field it came from, for the error's param
    if transcription is not None:
        fields, path = transcription
        if "model" in fields:
            model = fields["model"]
        if "language" in fields:
            values["language"], where["language"] = fields["language"], f"{path}.language"
        if "prompt" in fields:
            # OpenAI shows "no prompt" as "": Whisper must get no prompt, not an empty one.
            values["initial_prompt"], where["initial_prompt"] = fields["prompt"] or None, f"{path}.prompt"
    if "whisper" in session:
        whisper = _object(session["whisper"], "session.whisper")
        _check_keys(whisper, "session.whisper", ("partials", "segments", "options"), ())
        # null: back to the default (off), as OpenAI's null clears a field.
        if "partials" in whisper:
            partials = whisper["partials"] is not None and _checked(as_bool, "session.whisper.partials",
                                                                    whisper["partials"])
        if "segments" in whisper:
            segments = whisper["segments"] is not None and _checked(as_bool, "session.whisper.segments",
                                                                    whisper["segments"])
        if "options" in whisper:
            for name, value in _object(whisper["options"], "session.whisper.options").items():
                key = normalize_name(name)
                if key in where:
                    raise ProtocolError("invalid_value", f"{key} is given twice, in {where[key]} and in "
                                        "session.whisper.options: give it once", f"session.whisper.options.{name}")
                values[name] = value
    try:
        # The same table and messages as /invocations; only whisper.options can name an unknown option.
        parsed, _ = parse_options(values, source="session.whisper.options")
    except InvalidParameterError as exc:
        param = exc.param or ""
        code = "invalid_value" if param in TranscribeOptions.names() else "unknown_parameter"
        raise ProtocolError(code, exc.message, where.get(param, f"session.whisper.options.{param}")) from None
    named = {normalize_name(k) for k in values}
    options = replace(config.options, **{k: getattr(parsed, k) for k in named})
    return SessionConfig(audio=fmt, turn_detection=td, options=options, model=model, partials=partials,
                         segments=segments)


def _object(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError("invalid_value", f"{path} must be an object, got {_kind(value)}", path)
    return value


def _check_keys(obj: Mapping, path: str, used: Sequence[str], ignored: frozenset) -> None:
    for key in obj:
        if key not in used and key not in ignored:
            where = f"{path}.{key}" if path else key
            raise ProtocolError("unknown_parameter", f"unknown field {where!r}; "
                                f"{'known' if not path else path + ' takes'}: {', '.join(used)}", where)


def _checked(parse: Callable, path: str, value: Any, *args) -> Any:
    """``parse(name, value, *args)`` from serve.core.options, its error named by the field's path."""
    try:
        return parse(path, value, *args)
    except InvalidParameterError as exc:
        raise ProtocolError("invalid_value", exc.message, path) from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


# ---- server events ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """``<prefix>_<hex>`` (``event``, ``item``, ``sess``): OpenAI's id shape, 96 random bits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def server_event(type: str, **fields) -> dict:  # noqa: A002 - "type" is the wire's name
    """A server event: ``type``, a fresh ``event_id`` (``event_<hex>``), then ``fields``."""
    return {"type": type, "event_id": new_id("event"), **fields}


_CLIENT_FAULTS = (InvalidParameterError, InvalidRequestError, NotAcceptableError, PayloadTooLargeError,
                  AudioDecodeError)
"""The service's errors that are the client's doing (HTTP 4xx): invalid_request_error; the rest server_error."""


def error_event(error: BaseException, event_id: Optional[str] = None) -> dict:
    """``error`` in OpenAI's shape: ``{"type", "code", "message", "param", "event_id"}``.

    A ProtocolError says what it says; a ``serve.errors`` error keeps its message (written for the
    caller) with its kind as the code (``unsupported_option``...); any other exception is a
    ``server_error`` whose message gives nothing away: the server logs it. ``event_id`` (the client
    event's) defaults to the ProtocolError's own.
    """
    if isinstance(error, ProtocolError):
        body = {"type": error.error_type, "code": error.code, "message": error.message, "param": error.param,
                "event_id": event_id if event_id is not None else error.event_id}
    elif isinstance(error, WhisperServeError):
        body = {"type": "invalid_request_error" if isinstance(error, _CLIENT_FAULTS) else "server_error",
                "code": _snake(error.error_type), "message": error.message,
                "param": getattr(error, "param", None), "event_id": event_id}
    else:
        body = {"type": "server_error", "code": "server_error",
                "message": "the server failed while handling this; the endpoint's logs have the details",
                "param": None, "event_id": event_id}
    return server_event("error", error=body)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def session_created(config: SessionConfig, session_id: str) -> dict:
    """The first event of every connection: the session's id and its (default) configuration."""
    return server_event("session.created", session={"id": session_id, **config.describe()})


def session_updated(config: SessionConfig, session_id: Optional[str] = None) -> dict:
    """After each update: the whole configuration now in effect."""
    session = config.describe() if session_id is None else {"id": session_id, **config.describe()}
    return server_event("session.updated", session=session)


def speech_started(item_id: str, audio_start_ms: int) -> dict:
    """Server VAD heard speech start; ``audio_start_ms`` from the session's start, prefix padding included."""
    return server_event("input_audio_buffer.speech_started", audio_start_ms=int(audio_start_ms), item_id=item_id)


def speech_stopped(item_id: str, audio_end_ms: int) -> dict:
    """Server VAD heard the turn's speech end; ``audio_end_ms`` from the session's start."""
    return server_event("input_audio_buffer.speech_stopped", audio_end_ms=int(audio_end_ms), item_id=item_id)


def committed(item_id: str, previous_item_id: Optional[str] = None) -> dict:
    """A turn was closed (by server VAD or the client's commit): its item will get a ``completed``."""
    return server_event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def cleared() -> dict:
    """The current turn's uncommitted audio was dropped (the client's clear)."""
    return server_event("input_audio_buffer.cleared")


def delta(item_id: str, text: str) -> dict:
    """Newly settled words of an item: append-only; an item's deltas joined begin its transcript."""
    return server_event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                        delta=text)


def partial(item_id: str, text: str) -> dict:
    """The unstable tail after an item's settled words (extension, opt-in ``whisper.partials``): each
    replaces the last. Not an OpenAI event type: the official client hands it on by ``type``."""
    return server_event("conversation.item.input_audio_transcription.partial", item_id=item_id, text=text)


def completed(item_id: str, transcript: str, segments: Optional[Sequence[Union[Segment, Mapping]]] = None,
              *, audio_seconds: Optional[float] = None) -> dict:
    """An item's final transcript, once per committed turn.

    ``segments`` (opt-in ``whisper.segments``): ``Segment``s with session-absolute times, or dicts
    already in the wire shape ``{"start", "end", "text", "words"?}``. ``audio_seconds`` (the turn's
    audio) becomes OpenAI's ``usage`` ``{"type": "duration", "seconds"}``, which OpenAI's schema
    requires: pass it, or strict clients refuse the event.
    """
    fields: dict[str, Any] = {"item_id": item_id, "content_index": 0, "transcript": transcript}
    if audio_seconds is not None:
        fields["usage"] = {"type": "duration", "seconds": float(audio_seconds)}
    if segments is not None:
        fields["segments"] = [_segment_json(s) for s in segments]
    return server_event("conversation.item.input_audio_transcription.completed", **fields)


def failed(item_id: str, error: BaseException) -> dict:
    """An item whose transcription failed (its last pass could not be decoded): no transcript, the reason."""
    body = error_event(error)["error"]
    body.pop("event_id", None)
    return server_event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                        error=body)


def _segment_json(segment: Union[Segment, Mapping]) -> dict:
    if not isinstance(segment, Segment):
        return dict(segment)
    out: dict[str, Any] = {"start": segment.start, "end": segment.end, "text": segment.text}
    if segment.words is not None:
        out["words"] = [word_dict(w) for w in segment.words]
    return out
