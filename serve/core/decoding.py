"""Whisper's decoding rules around one engine call: temperature fallback, silence, and what is left to decode.

These are the rules of Whisper's own long-form loop (``whisper.transcribe``),
applied to windows that the scheduler decodes in batches:

- a window whose text compresses too well (a loop) or is too unlikely is
  decoded again at the next temperature; the best result that is not a loop
  is kept;
- a window that is probably silence (no-speech probability above 0.6 with an
  unlikely text) yields no segment;
- a window the decoder left unfinished (an unclosed last segment), or whose
  last segment closed while speech goes on after it, is decoded again from
  there, as Whisper's loop does by seeking.
"""

from __future__ import annotations

import zlib
from typing import Optional, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .cpu_turns import turn
from .engine import Decoded, Engine
from .options import DecodeOptions
from .results import Segment

COMPRESSION_RATIO_THRESHOLD = 2.4
"""A text whose bytes compress better than this is a loop: decode again hotter."""
LOGPROB_THRESHOLD = -1.0
"""A text less likely than this (average log probability per token) is decoded again hotter."""
NO_SPEECH_THRESHOLD = 0.6
"""No-speech probability above this, with an unlikely text, is silence: no segment."""
PROMPT_RESET_TEMPERATURE = 0.5
"""A sequential window decoded above this temperature is not the next window's prompt (Whisper's rule)."""
MIN_PROGRESS_S = 0.5
"""A window whose decoder stopped early is decoded again from there, if that moves forward at all."""
MIN_TAIL_SPEECH_S = 0.5
"""Speech after a window's last segment that makes the rest of the window be decoded again."""


def decode_with_fallback(engine: Engine, windows: Sequence[np.ndarray], options: DecodeOptions,
                         fallback: Sequence[bool], scores: bool = False,
                         prompts: Optional[Sequence[Optional[str]]] = None) -> list[Decoded]:
    """Decode every window, each again at the next temperature while it needs it (``fallback[i]`` allows it).
    ``prompts``: each window's own prompt (an engine with ``prompt_per_window``). Each engine call holds
    the engine's device's turn (cpu_turns.py), so a speaker embedder on the CPU runs between calls."""
    best: list[Optional[Decoded]] = [None] * len(windows)
    pending = list(range(len(windows)))
    for n, temperature in enumerate(options.temperatures):
        # Only prompted calls name ``prompts``: engines without ``prompt_per_window`` need not take it.
        per_window = {} if prompts is None else {"prompts": [prompts[i] for i in pending]}
        with turn(engine.device.kind):
            decoded = engine.decode([windows[i] for i in pending], options, temperature, scores, **per_window)
        last = n == len(options.temperatures) - 1
        retry = []
        for i, d in zip(pending, decoded):
            best[i] = better(best[i], d)
            if needs_fallback(d) and not last and fallback[i]:
                retry.append(i)
        pending = retry
        if not pending:
            break
    return best  # type: ignore[return-value]


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: raw bytes over zlib-compressed bytes (a loop compresses well)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def needs_fallback(d: Decoded) -> bool:
    return (d.compression_ratio > COMPRESSION_RATIO_THRESHOLD or d.avg_logprob < LOGPROB_THRESHOLD) \
        and not is_silence(d)


def is_silence(d: Decoded) -> bool:
    return d.no_speech_prob > NO_SPEECH_THRESHOLD and d.avg_logprob < LOGPROB_THRESHOLD


def better(current: Optional[Decoded], new: Decoded) -> Decoded:
    """Whisper keeps the last temperature's result; we keep the best one that is not a loop."""
    if current is None:
        return new
    rank = lambda d: (d.compression_ratio <= COMPRESSION_RATIO_THRESHOLD, d.avg_logprob)  # noqa: E731
    return new if rank(new) > rank(current) else current


def stopped_at(audio: np.ndarray, d: Decoded) -> Optional[float]:
    """Where in the window to decode again (seconds), or None: the decoder left text unfinished,
    or closed its last segment while speech goes on after it."""
    stop = d.resume_at
    if stop is None and d.segments and speech_after(audio, d.segments[-1].end):
        stop = d.segments[-1].end
    return stop if stop is not None and stop >= MIN_PROGRESS_S else None


def speech_after(audio: np.ndarray, seconds: float) -> bool:
    """Whether the VAD hears speech in ``audio`` after ``seconds`` (at least ``MIN_TAIL_SPEECH_S`` of it)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    tail = audio[int(max(seconds, 0.0) * SAMPLE_RATE):]
    if len(tail) < MIN_TAIL_SPEECH_S * SAMPLE_RATE:
        return False
    found = get_speech_timestamps(tail, VadOptions(speech_pad_ms=0))
    return sum(r["end"] - r["start"] for r in found) >= MIN_TAIL_SPEECH_S * SAMPLE_RATE


def own_scores(segments: Sequence[Segment], logprobs: Sequence[tuple[float, int]]) -> dict:
    """A packed request's scores from its own segments' tokens (never its neighbours').

    ``avg_logprob`` over its tokens, ``compression_ratio`` of its own text;
    ``no_speech_prob`` is Whisper's probability for a whole engine window, which
    holds other requests' audio too: not this request's, so None.
    """
    total = sum(lp for lp, _ in logprobs)
    count = sum(n for _, n in logprobs)
    return {"avg_logprob": round(total / count, 4) if count else None, "no_speech_prob": None,
            "compression_ratio": round(compression_ratio("".join(s.text for s in segments)), 4)}
