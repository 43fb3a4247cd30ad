"""The OpenAI audio API on the same server: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

A second front door to the path /invocations takes, so that OpenAI's
clients (the ``openai`` SDK, tools built on it) work against this container
unchanged. Only the shapes are OpenAI's: the multipart fields, the response
formats, the stream events and the error body. Between them everything is
shared: the fields are mapped onto ``TranscribeOptions`` and validated by
``parse_options`` and ``resolve``, the file goes to the request's scratch
folder (``inputs.save_file_field``), and ``jobs.Transcribing`` submits to the
scheduler, waits or streams, and logs.

``model`` must name what this server serves: the loaded model's name (``GET
/v1/models``) or ``whisper-1``, the name every OpenAI client sends for Whisper,
accepted as an alias because the server holds exactly one model. Any other
name is a 404 that names the loaded model: answering a request for, say, a
multilingual large model with tiny.en would be a silent substitution. Every
/v1 answer says what served it in ``X-Whisper-Model`` and ``X-Whisper-Backend``.

The SageMaker runtime API only ever calls /invocations: these routes serve the
container where it is reached directly (local runs, ECS, EKS, a load balancer).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, g, request
from werkzeug.datastructures import MultiDict

from ..core.options import TranscribeOptions, as_bool, as_float, parse_options
from ..core.results import Segment, Transcription
from ..core.runtime import Runtime
from ..diarization import known
from ..diarization.embedding import embedded
from ..diarization.engine import embedded_available
from ..errors import InvalidParameterError, InvalidRequestError, ModelNotFoundError, UnsupportedOptionError
from ..settings import Settings
from . import errors
from .errors import error_message, error_type
from .formats import render_srt, render_vtt
from .inputs import Invocation, save_file_field
from .jobs import Transcribing, log_failure, speaker_model_of

WHISPER_1 = "whisper-1"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("segment", "word")
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""OpenAI: "If set to 0, the model will use log probability to automatically increase the
temperature until certain thresholds are hit" -- Whisper's own fallback schedule."""
EXTENSIONS = ("beam_size", "vad_filter", "condition_on_previous_text", "chunk_length_s", "diarize", "num_speakers",
              "min_speakers", "max_speakers")
"""Our options OpenAI has no field for, accepted under their /invocations names."""
PARAM_NAMES = {"initial_prompt": "prompt", "word_timestamps": "timestamp_granularities", "task": "model"}
"""Option names in errors -> the OpenAI field to blame (a model that cannot translate is the model's fault)."""


class FieldError(InvalidParameterError):
    """A field of OpenAI's request is wrong: ``param`` is already the field's name."""


@dataclass(frozen=True)
class Route:
    task: str
    fields: tuple[str, ...]
    """The multipart fields OpenAI's reference defines for this route (besides the extensions)."""


TRANSCRIPTIONS = Route("transcribe", ("file", "model", "language", "prompt", "response_format", "temperature",
                                      "timestamp_granularities[]", "stream", "known_speaker_names[]",
                                      "known_speaker_references[]"))
TRANSLATIONS = Route("translate", ("file", "model", "prompt", "response_format", "temperature"))


@dataclass(frozen=True)
class Asked:
    """What an OpenAI request asks, besides the transcription options."""

    response_format: str
    granularities: tuple[str, ...]
    stream: bool


def blueprint(settings: Settings, runtime: Runtime) -> Blueprint:
    bp = Blueprint("openai", __name__, url_prefix="/v1")
    created = int(time.time())

    @bp.post("/audio/transcriptions")
    def transcriptions():
        return _serve(TRANSCRIPTIONS)

    @bp.post("/audio/translations")
    def translations():
        return _serve(TRANSLATIONS)

    @bp.get("/models")
    def models():
        backend = runtime.require_ready()
        return {"object": "list", "data": [{"id": backend.model_name, "object": "model", "created": created,
                                            "owned_by": "whisper-sagemaker"}]}

    @bp.after_request
    def _say_what_served(response: Response) -> Response:
        if runtime.backend is not None:
            response.headers["X-Whisper-Model"] = runtime.backend.model_name
            response.headers["X-Whisper-Backend"] = runtime.backend.name
        return response

    @bp.errorhandler(Exception)
    def _error(exc: Exception):
        return error_response(exc)

    def _serve(route: Route) -> Response:
        record: dict = {"event": "invocation", "route": request.path, "request_id": g.request_id,
                        "content_type": request.mimetype or None, "accept": request.headers.get("Accept")}
        asked: list[Asked] = []

        references: list[known.Reference] = []

        def read(scratch: Path) -> Invocation:
            if request.mimetype != "multipart/form-data":
                raise InvalidRequestError("send multipart/form-data with the audio in a 'file' field, "
                                          f"as OpenAI's API takes it (got {request.mimetype or 'no Content-Type'})")
            path = save_file_field(request, scratch)
            options, req = parse_form(request.form, route, runtime)
            asked.append(req)
            references.extend(known_speakers(request.form, options, scratch, runtime))
            return Invocation(path, options, "openai-multipart", path.stat().st_size, req.stream)

        def naming(turns, audio) -> dict[int, str]:
            if not references:
                return {}
            return known.name_speakers(turns, audio.read, references, embedded(*speaker_model_of(settings, runtime)))

        try:
            transcribing = Transcribing.start(settings, runtime, record, read, naming)
            req = asked[0]
            if req.stream:
                return transcribing.stream(EVENTS)
            result, _ = transcribing.result()
            return render(result, route, req)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
            return log_failure(record, exc, error_response(exc))

    return bp


def parse_form(form: MultiDict, route: Route, runtime: Runtime) -> tuple[TranscribeOptions, Asked]:
    """The form's fields -> our options (validated as /invocations validates them) and the OpenAI-only ones."""
    known = (*route.fields, *EXTENSIONS)
    for name in form:
        if name not in known:
            raise FieldError(f"unknown parameter {name!r} for {request.path}; known parameters: "
                             f"{', '.join(known)}", param=name)
        if len(form.getlist(name)) > 1 and not name.endswith("[]"):
            raise FieldError(f"parameter {name!r} is given more than once", param=name)
    _check_model(form.get("model", ""), runtime)
    response_format = form.get("response_format", "json").strip().lower()
    if response_format not in FORMATS:
        raise FieldError(f"response_format must be one of {', '.join(FORMATS)}, got {response_format!r}",
                         param="response_format")
    if response_format == "diarized_json" and route is TRANSLATIONS:
        raise FieldError("response_format=diarized_json is for /v1/audio/transcriptions", param="response_format")
    granularities = tuple(x.strip().lower() for x in form.getlist("timestamp_granularities[]"))
    for item in granularities:
        if item not in GRANULARITIES:
            raise FieldError(f"timestamp_granularities[] takes {' and '.join(GRANULARITIES)}, "
                             f"got {item!r}", param="timestamp_granularities")
    if "word" in granularities and response_format != "verbose_json":
        raise FieldError("timestamp_granularities[]=word needs response_format=verbose_json",
                         param="timestamp_granularities")
    stream = as_bool("stream", form["stream"]) if "stream" in form else False
    if stream and response_format not in ("json", "text"):
        raise FieldError("stream=true answers with transcript.text.delta events; it takes "
                         f"response_format json or text, not {response_format}", param="response_format")

    values: dict = {"task": route.task}
    if "language" in form:
        values["language"] = form["language"]
    if "prompt" in form:
        values["initial_prompt"] = form["prompt"]
    if "temperature" in form:
        t = as_float("temperature", form["temperature"], 0.0, 1.0)
        values["temperature"] = FALLBACK_TEMPERATURES if t == 0 else (t,)
    if "word" in granularities:
        values["word_timestamps"] = True
    values.update({name: form[name] for name in EXTENSIONS if name in form})
    if response_format == "diarized_json":
        if "diarize" in form and not as_bool("diarize", form["diarize"]):
            raise FieldError("response_format=diarized_json labels speakers: it cannot be diarize=false",
                             param="diarize")
        values["diarize"] = True
    options, _ = parse_options(values, source="the form fields")
    return options, Asked(response_format, granularities, stream)


def known_speakers(form: MultiDict, options: TranscribeOptions, scratch: Path,
                   runtime: Runtime) -> list[known.Reference]:
    """The request's known speakers (checked and decoded), [] without them; only for a diarized request."""
    if known.NAMES not in form and known.REFERENCES not in form:
        return []
    if not options.merged_over(runtime.settings.defaults).diarize:
        raise FieldError(f"{known.NAMES} and {known.REFERENCES} name the speakers of a diarized transcript: "
                         "ask for response_format=diarized_json (or diarize=true)", param=known.NAMES)
    reason = embedded_available()
    if reason is not None:  # references are matched with the embedded speaker model, whatever the diarizer
        raise UnsupportedOptionError(f"known speakers cannot be matched: {reason}", param=known.REFERENCES)
    return known.parse_references(form.getlist(known.NAMES), form.getlist(known.REFERENCES), scratch)


def _check_model(model: str, runtime: Runtime) -> None:
    served = runtime.require_ready().model_name
    model = model.strip()
    if not model:
        raise InvalidParameterError(f"model is required: {served!r} (or {WHISPER_1!r})", param="model")
    if model not in (served, WHISPER_1):
        raise ModelNotFoundError(f"the model {model!r} is not served here; this server serves {served!r} "
                                 f"(GET /v1/models), also accepted as {WHISPER_1!r}", param="model")


# ---- answers ------------------------------------------------------------------------------------


def render(t: Transcription, route: Route, req: Asked) -> Response:
    fmt = req.response_format
    if fmt == "text":
        return Response(t.text + "\n", content_type="text/plain; charset=utf-8")
    if fmt == "srt":
        return Response(render_srt(t, {}), content_type="application/x-subrip; charset=utf-8")
    if fmt == "vtt":
        return Response(render_vtt(t, {}), content_type="text/vtt; charset=utf-8")
    if fmt == "diarized_json":
        return Response(json.dumps(diarized(t), ensure_ascii=False), content_type="application/json")
    usage = {"type": "duration", "seconds": t.duration}
    if fmt == "json":
        body: dict = {"text": t.text} if route is TRANSLATIONS else {"text": t.text, "usage": usage}
    else:
        body = {"task": route.task, "language": "english" if route is TRANSLATIONS else language_name(t.language),
                "duration": t.duration, "text": t.text}
        if "segment" in req.granularities or not req.granularities:
            body["segments"] = [_segment(s) for s in t.segments]
        if "word" in req.granularities:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in t.words or ()]
        if route is TRANSCRIPTIONS:
            body["usage"] = usage
    return Response(json.dumps(body, ensure_ascii=False), content_type="application/json")


def _segment(s: Segment) -> dict:
    # seek: the segment's start in Whisper's 10 ms frames (windows here are cut per request, not at fixed seeks);
    # tokens: the engines' token ids are not kept.
    out = {"id": s.id, "seek": round(s.start * 100), "start": s.start, "end": s.end, "text": s.text, "tokens": [],
           "temperature": s.temperature, "avg_logprob": s.avg_logprob,
           "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
    if s.speaker is not None:  # diarize=true: our extension of verbose_json
        out["speaker"] = s.speaker
    return out


def diarized(t: Transcription) -> dict:
    """OpenAI's ``diarized_json``: segments with a speaker each, labelled ``A``, ``B``... as OpenAI labels them
    (in order of first appearance), or by the known speaker's name they matched."""
    letters = {s.speaker: _letters(i) for i, s in enumerate(t.speakers or ()) if SPEAKER_LABEL.fullmatch(s.speaker)}
    return {"task": "transcribe", "duration": t.duration, "text": t.text,
            "segments": [{"type": "transcript.text.segment", "id": f"seg_{s.id:03d}", "start": s.start, "end": s.end,
                          "text": s.text, "speaker": letters.get(s.speaker, s.speaker)} for s in t.segments],
            "usage": {"type": "duration", "seconds": t.duration}}


SPEAKER_LABEL = re.compile(r"SPEAKER_\d{2,}")


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: OpenAI's labels for speakers it does not know."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


@functools.cache
def _language_names() -> dict[str, str]:
    """Whisper's code -> name table, read from openai-whisper's tokenizer source: importing the
    package would import torch, which the other engines' workers do not need."""
    try:
        spec = importlib.util.find_spec("whisper")
        source = Path(list(spec.submodule_search_locations)[0], "tokenizer.py").read_text()  # type: ignore[union-attr]
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "LANGUAGES" for t in n.targets))
        return ast.literal_eval(node.value)
    except Exception:  # noqa: BLE001 - without the table, the code is still an answer
        return {}


def language_name(code: str) -> str:
    """verbose_json's ``language`` is the name (``english``), as OpenAI answers it."""
    return _language_names().get(code, code)


@dataclass(frozen=True)
class _Events:
    """OpenAI's transcription stream: server-sent ``transcript.text.delta`` events, one per segment
    (their texts joined are the transcript), then ``transcript.text.done``; or an ``error`` event."""

    content_type: str = "text/event-stream"

    def segment(self, segment: Segment) -> str:
        return _sse({"type": "transcript.text.delta", "delta": segment.text})

    def done(self, t: Transcription, extra: dict) -> str:
        return _sse({"type": "transcript.text.done", "text": t.text})

    def error(self, exc: BaseException, status: int) -> str:
        return _sse({"type": "error", "error": error_body(exc, status)})


EVENTS = _Events()


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---- errors -------------------------------------------------------------------------------------


def error_body(exc: BaseException, status: int) -> dict:
    """OpenAI's error object: message, type, param (OpenAI's field name), code."""
    param = getattr(exc, "param", None)
    if not isinstance(exc, FieldError):
        param = PARAM_NAMES.get(param, param)
    if isinstance(exc, ModelNotFoundError):
        code = "model_not_found"
    else:  # a missing or wrong Authorization is OpenAI's invalid_api_key (the client raises AuthenticationError)
        code = "invalid_api_key" if status == 401 else _snake(error_type(exc))
    return {"message": error_message(exc), "type": "invalid_request_error" if status < 500 else "server_error",
            "param": param, "code": code}


def error_response(exc: BaseException) -> Response:
    """``{"error": {...}}`` in OpenAI's shape, with the status /invocations gives the same error."""
    return errors.error_response(exc, body=error_body)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
