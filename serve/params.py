"""Parse and validate transcription parameters from any source.

Parameters reach the server as strings (the ``X-Amzn-SageMaker-Custom-Attributes``
header, form fields, ``WHISPER_*`` environment defaults) or as JSON values.
All of them go through ``parse_options`` so that the same rules and the same
error messages apply everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import InvalidParameterError
from .transcription import TranscribeOptions

CUSTOM_ATTRIBUTES_MAX_CHARS = 1024  # SageMaker's own limit for the header
TASKS = ("transcribe", "translate")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidParameterError(f"{name} must be true or false, got {value!r}")


def as_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (no upper bound when high is None), or a 400 naming ``name``."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}") from None
    _check_range(name, number, low, high)
    return number


def as_float(name: str, value: Any, low: float, high: float | None = None) -> float:
    """A number in [low, high] (no upper bound when high is None), or a 400 naming ``name``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}") from None
    _check_range(name, number, low, high)
    return number


def _check_range(name: str, number: float, low: float, high: float | None) -> None:
    if high is None and number < low:
        raise InvalidParameterError(f"{name} must be at least {low}, got {number}")
    if high is not None and not low <= number <= high:
        raise InvalidParameterError(f"{name} must be between {low} and {high}, got {number}")


def _as_temperature(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise InvalidParameterError("temperature must be a number or a comma-separated list")
    temps = tuple(as_float("temperature", v, 0.0, 1.0) for v in items)
    if list(temps) != sorted(temps):
        raise InvalidParameterError(f"temperature fallback values must increase, got {value!r}")
    return temps


def _as_language(value: Any) -> str | None:
    if not isinstance(value, str):
        raise InvalidParameterError(f"language must be a language code, got {value!r}")
    code = value.strip().lower()
    if code in ("", "auto", "detect"):
        return None
    if not code.isalpha() or not 2 <= len(code) <= 3:
        raise InvalidParameterError(f"language must be a language code like 'en' or 'fr', got {value!r}")
    return code


def _as_task(value: Any) -> str:
    task = str(value).strip().lower()
    if task not in TASKS:
        raise InvalidParameterError(f"task must be one of {', '.join(TASKS)}, got {value!r}")
    return task


def _as_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameterError(f"{name} must be text, got {value!r}")
    return value


_PARSERS = {
    "language": _as_language,
    "task": _as_task,
    "initial_prompt": lambda v: _as_text("initial_prompt", v),
    "temperature": _as_temperature,
    "beam_size": lambda v: as_int("beam_size", v, 1, 20),
    "word_timestamps": lambda v: _as_bool("word_timestamps", v),
    "vad_filter": lambda v: _as_bool("vad_filter", v),
    "condition_on_previous_text": lambda v: _as_bool("condition_on_previous_text", v),
    "chunk_length_s": lambda v: as_float("chunk_length_s", v, 1.0, 30.0),
    "batch_size": lambda v: as_int("batch_size", v, 1, 256),
}
assert set(_PARSERS) == set(TranscribeOptions.names()), "every option needs a parser"


def parse_options(values: Mapping[str, Any], source: str = "parameters") -> TranscribeOptions:
    """Validate ``values`` (strings or JSON values) into ``TranscribeOptions``.

    Unknown names are an error, not silently dropped: a typo such as
    ``word_timestamp=true`` would otherwise return a transcript without
    the words the caller asked for.
    """
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        key = name.strip().lower().replace("-", "_")
        if key not in _PARSERS:
            known = ", ".join(TranscribeOptions.names())
            raise InvalidParameterError(f"unknown parameter {name!r} in {source}; known parameters: {known}")
        if value is None:
            continue
        parsed[key] = _PARSERS[key](value)
    return TranscribeOptions(**parsed)


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """Split ``language=fr;task=translate`` into a dict (header values are strings)."""
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
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out
