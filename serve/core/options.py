"""Transcription options: declared once, parsed from any source, resolved once.

``TranscribeOptions`` is the one place every option is declared and
documented. ``None`` means "not set by this source". Parameters reach the
server as strings (the ``X-Amzn-SageMaker-Custom-Attributes`` header, form
fields, ``WHISPER_*`` defaults) or as JSON values; all go through
``parse_options`` so that the same rules and messages apply everywhere.

``resolve`` runs once per request, where it enters the scheduler: the
request's options over the server's defaults over ``BUILT_IN``, checked
against what the loaded backend and model can honour. What it returns,
``Options``, is concrete: below that line nothing merges or re-checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Optional

from ..errors import InvalidParameterError, UnsupportedOptionError

CUSTOM_ATTRIBUTES_MAX_CHARS = 1024  # SageMaker's own limit for the header
TASKS = ("transcribe", "translate")
MAX_CHUNK_S = 30.0
"""Whisper's encoder sees 30 s at a time: no segment is longer."""
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class TranscribeOptions:
    language: Optional[str] = None
    """ISO 639-1 code of the spoken language (``en``, ``fr``...). Unset: detected
    from the first speech. An English-only model (``*.en``) refuses any other language."""

    task: Optional[str] = None
    """``transcribe`` (default) or ``translate`` (into English; multilingual models only)."""

    initial_prompt: Optional[str] = None
    """Text given to the decoder as previous context (spellings, names, style).
    With batched decoding every segment gets it; with sequential decoding only the first window."""

    temperature: Optional[tuple[float, ...]] = None
    """Sampling temperature(s). Several values mean fallback: a segment whose
    output is too repetitive or unlikely is decoded again at the next one.
    Default ``0``: greedy, deterministic."""

    beam_size: Optional[int] = None
    """Beam search width at temperature 0. Default 1 (greedy)."""

    word_timestamps: Optional[bool] = None
    """Add per-word start/end times (and probabilities where the engine gives them)."""

    vad_filter: Optional[bool] = None
    """Find speech with the Silero VAD first and decode only that. Default true:
    on silence and noise Whisper invents sentences. False decodes every second of the audio."""

    condition_on_previous_text: Optional[bool] = None
    """Sequential long-form decoding: each 30 s window gets the previous window's
    text as a prompt, with temperature fallback per window (the engine's own
    ``transcribe``). Such a request is not batched with others. Default false:
    with greedy decoding it let tiny.en fall into a repetition loop that
    dropped 4 of 373 sentences of a 21-minute file; off, nothing was lost."""

    chunk_length_s: Optional[float] = None
    """Longest segment the audio is cut into for decoding, 1 to 30 s (default 30).
    Cuts fall at pauses (the VAD's, or the quietest moment)."""

    diarize: Optional[bool] = None
    """Label who speaks: ``speaker`` on every segment (and word), ``SPEAKER_00``, ``SPEAKER_01``... in order
    of first appearance, and a ``speakers`` list with each one's speaking time. A segment never holds two
    voices: it is split where the speaker changes. The whole audio is diarized at once, beside its
    transcription, so the answer cannot be streamed. Default false."""

    num_speakers: Optional[int] = None
    """With ``diarize``: exactly this many speakers (1-20). Unset: found from the audio."""

    min_speakers: Optional[int] = None
    """With ``diarize``: at least this many speakers (1-20)."""

    max_speakers: Optional[int] = None
    """With ``diarize``: at most this many speakers (1-20; 10 when unset)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def set_options(self) -> dict:
        """Only the options this source set (not None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def merged_over(self, defaults: "TranscribeOptions") -> "TranscribeOptions":
        """These options, with unset ones taken from ``defaults``."""
        values = asdict(defaults)
        values.update(self.set_options())
        return TranscribeOptions(**values)


BUILT_IN = TranscribeOptions(task="transcribe", temperature=(0.0,), beam_size=1, word_timestamps=False,
                             vad_filter=True, condition_on_previous_text=False, chunk_length_s=MAX_CHUNK_S,
                             diarize=False)
"""What an option is when neither the request nor a WHISPER_* default sets it."""

SPEAKER_OPTIONS = ("diarize", "num_speakers", "min_speakers", "max_speakers")
"""Options the server honours beside the engine (serve.diarization), whatever the backend."""
ENGINE_OPTIONS = tuple(name for name in TranscribeOptions.names() if name not in SPEAKER_OPTIONS)
"""Options an engine honours or refuses (``Engine.support`` declares every one)."""
MAX_SPEAKERS = 20

RETIRED = {
    "batch_size": "batch_size is no longer a request option: the server batches segments of all "
                  "concurrent requests itself, up to WHISPER_MAX_BATCH",
}


# ---- resolved options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeOptions:
    """What one engine call decodes with. Segments batch together only when these are equal."""

    language: Optional[str]
    task: str
    initial_prompt: Optional[str]
    temperatures: tuple[float, ...]
    beam_size: int
    word_timestamps: bool


@dataclass(frozen=True)
class SpeakerCounts:
    """How many speakers to look for: exactly ``num``, or between ``low`` and ``high`` (None: found)."""

    num: Optional[int] = None
    low: Optional[int] = None
    high: Optional[int] = None


@dataclass(frozen=True)
class Options:
    """A request's options, concrete and checked against the loaded model (see ``resolve``)."""

    decode: DecodeOptions
    vad_filter: bool
    condition_on_previous_text: bool
    chunk_length_s: float
    speakers: Optional[SpeakerCounts] = None
    """Diarize, looking for this many speakers; None: no diarization."""
    hide_words: bool = False
    """Words were decoded only to split segments where the speaker changes (diarization); the
    request did not ask for them, so the answer leaves them out."""

    @property
    def sequential(self) -> bool:
        """Decoded window after window by the engine's own long-form loop, not batched."""
        return self.condition_on_previous_text


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend and model can honour (``Backend.capabilities``)."""

    backend: str
    model_name: str
    english_only: bool
    support: Mapping[str, Optional[str]]
    """Every engine option (``ENGINE_OPTIONS``) -> None (honoured) or the reason it is not."""
    off_values: Mapping[str, Any]
    """An option the backend rejects may still be set to the value that describes what it does anyway."""


def resolve(request: TranscribeOptions, defaults: TranscribeOptions, capabilities: Capabilities) -> Options:
    """The request's options over ``defaults`` over ``BUILT_IN``, checked once. Raises UnsupportedOptionError."""
    explicit = request.merged_over(defaults)
    for name, value in explicit.set_options().items():
        reason = None if name in SPEAKER_OPTIONS else capabilities.support[name]
        if reason is not None and capabilities.off_values.get(name, object()) != value:
            raise UnsupportedOptionError(f"option {name}={_show(value)} is not supported by the "
                                         f"{capabilities.backend} backend: {reason}", param=name)
    o = explicit.merged_over(BUILT_IN)
    if capabilities.english_only:
        where = f"{capabilities.model_name} ({capabilities.backend} backend)"
        if o.language not in (None, "en"):
            raise UnsupportedOptionError(f"language={o.language} is not possible with the English-only model "
                                         f"{where}; use a multilingual model", param="language")
        if o.task == "translate":
            raise UnsupportedOptionError(f"task=translate needs a multilingual model; {where} is English-only",
                                         param="task")
    language = "en" if capabilities.english_only else o.language
    # Speaker counts without diarize are a mistake where they were given: in this request, or in
    # defaults that do not diarize. Defaults' counts under a request's diarize=false are simply not used.
    named = set(request.set_options()) | (set() if defaults.diarize else set(defaults.set_options()))
    speakers = _speakers(o, named)
    # A diarized segment is split where its words change speaker, so its words are needed
    words = o.word_timestamps or (speakers is not None and capabilities.support["word_timestamps"] is None)
    return Options(
        decode=DecodeOptions(language=language, task=o.task, initial_prompt=o.initial_prompt,
                             temperatures=o.temperature, beam_size=o.beam_size, word_timestamps=words),
        vad_filter=o.vad_filter, condition_on_previous_text=o.condition_on_previous_text,
        chunk_length_s=o.chunk_length_s, speakers=speakers, hide_words=words and not o.word_timestamps)


def _speakers(o: TranscribeOptions, named: set[str]) -> Optional[SpeakerCounts]:
    """The speaker counts of a diarized request, checked against each other; None without ``diarize``."""
    counts = {name: getattr(o, name) for name in SPEAKER_OPTIONS[1:] if getattr(o, name) is not None}
    if not o.diarize:
        given = [name for name in counts if name in named]
        if given:
            name = given[0]
            raise InvalidParameterError(f"{name} needs diarize=true (it says how many speakers to label)", param=name)
        return None
    if o.min_speakers and o.max_speakers and o.min_speakers > o.max_speakers:
        raise InvalidParameterError(f"min_speakers ({o.min_speakers}) is above max_speakers ({o.max_speakers})",
                                    param="min_speakers")
    if o.num_speakers:
        for name in ("min_speakers", "max_speakers"):
            bound = counts.get(name)
            if bound and (o.num_speakers < bound if name == "min_speakers" else o.num_speakers > bound):
                raise InvalidParameterError(f"num_speakers ({o.num_speakers}) contradicts {name} ({bound}); "
                                            "give num_speakers alone, or a range", param="num_speakers")
    return SpeakerCounts(num=o.num_speakers, low=o.min_speakers, high=o.max_speakers)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---- parsing ------------------------------------------------------------------------------------


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidParameterError(f"{name} must be true or false, got {value!r}", param=name)


def as_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (no upper bound when high is None), or an error naming ``name``."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}", param=name) from None
    _check_range(name, number, low, high)
    return number


def as_float(name: str, value: Any, low: float, high: float | None = None) -> float:
    """A number in [low, high] (no upper bound when high is None), or an error naming ``name``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}", param=name) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidParameterError(f"{name} must be a finite number, got {value!r}", param=name)
    _check_range(name, number, low, high)
    return number


def _check_range(name: str, number: float, low: float, high: float | None) -> None:
    if high is None and number < low:
        raise InvalidParameterError(f"{name} must be at least {low}, got {number}", param=name)
    if high is not None and not low <= number <= high:
        raise InvalidParameterError(f"{name} must be between {low} and {high}, got {number}", param=name)


def _as_temperature(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise InvalidParameterError("temperature must be a number or a comma-separated list", param="temperature")
    temps = tuple(as_float("temperature", v, 0.0, 1.0) for v in items)
    if list(temps) != sorted(temps):
        raise InvalidParameterError(f"temperature fallback values must increase, got {value!r}", param="temperature")
    return temps


def _as_language(value: Any) -> str | None:
    if not isinstance(value, str):
        raise InvalidParameterError(f"language must be a language code, got {value!r}", param="language")
    code = value.strip().lower()
    if code in ("", "auto", "detect"):
        return None
    if not code.isalpha() or not 2 <= len(code) <= 3:
        raise InvalidParameterError(f"language must be a language code like 'en' or 'fr', got {value!r}",
                                    param="language")
    return code


def _as_task(value: Any) -> str:
    task = str(value).strip().lower()
    if task not in TASKS:
        raise InvalidParameterError(f"task must be one of {', '.join(TASKS)}, got {value!r}", param="task")
    return task


def _as_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameterError(f"{name} must be text, got {value!r}", param=name)
    return value


Parser = Callable[[Any], Any]

_PARSERS: dict[str, Parser] = {
    "language": _as_language,
    "task": _as_task,
    "initial_prompt": lambda v: _as_text("initial_prompt", v),
    "temperature": _as_temperature,
    "beam_size": lambda v: as_int("beam_size", v, 1, 20),
    "word_timestamps": lambda v: as_bool("word_timestamps", v),
    "vad_filter": lambda v: as_bool("vad_filter", v),
    "condition_on_previous_text": lambda v: as_bool("condition_on_previous_text", v),
    "chunk_length_s": lambda v: as_float("chunk_length_s", v, 1.0, MAX_CHUNK_S),
    "diarize": lambda v: as_bool("diarize", v),
    "num_speakers": lambda v: as_int("num_speakers", v, 1, MAX_SPEAKERS),
    "min_speakers": lambda v: as_int("min_speakers", v, 1, MAX_SPEAKERS),
    "max_speakers": lambda v: as_int("max_speakers", v, 1, MAX_SPEAKERS),
}
assert set(_PARSERS) == set(TranscribeOptions.names()), "every option needs a parser"


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def parse_options(values: Mapping[str, Any], source: str = "parameters",
                  extra: Optional[Mapping[str, Parser]] = None) -> tuple[TranscribeOptions, dict[str, Any]]:
    """Validate ``values`` (strings or JSON values) into options, plus the ``extra`` parameters' values.

    ``extra`` names parameters that are not transcription options (``stream``
    for the HTTP layer). Unknown names are an error, not silently dropped: a
    typo such as ``word_timestamp=true`` would otherwise return a transcript
    without the words the caller asked for. A name given twice in one source
    (``language`` and ``Language``) is an error too.
    """
    extra = extra or {}
    parsed: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    seen: set[str] = set()
    for name, value in values.items():
        key = normalize_name(name)
        if key in seen:
            raise InvalidParameterError(f"parameter {key!r} is given more than once in {source}", param=key)
        seen.add(key)
        if key in RETIRED:
            raise InvalidParameterError(RETIRED[key], param=key)
        parser = _PARSERS.get(key) or extra.get(key)
        if parser is None:
            known = ", ".join((*TranscribeOptions.names(), *extra))
            raise InvalidParameterError(f"unknown parameter {name!r} in {source}; known parameters: {known}",
                                        param=key)
        if value is None:
            continue
        (parsed if key in _PARSERS else extras)[key] = parser(value)
    return TranscribeOptions(**parsed), extras


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """Split ``language=fr;task=translate`` into a dict (header values are strings).

    A key given twice (``language=fr;language=en``) is refused: silently keeping
    one of them would transcribe in a language the caller may not have meant.
    """
    if not header:
        return {}
    if len(header) > CUSTOM_ATTRIBUTES_MAX_CHARS:
        raise InvalidParameterError(
            f"X-Amzn-SageMaker-Custom-Attributes is {len(header)} characters; "
            f"SageMaker allows at most {CUSTOM_ATTRIBUTES_MAX_CHARS}"
        )
    out: dict[str, str] = {}
    for item in header.split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise InvalidParameterError(
                f"X-Amzn-SageMaker-Custom-Attributes item {item!r} is not name=value "
                "(expected e.g. 'language=en;word_timestamps=true')"
            )
        name, value = (part.strip() for part in item.split("=", 1))
        if any(normalize_name(k) == normalize_name(name) for k in out):
            raise InvalidParameterError(f"X-Amzn-SageMaker-Custom-Attributes gives {name!r} more than once; "
                                        "give each parameter once", param=normalize_name(name))
        out[name] = value
    return out
