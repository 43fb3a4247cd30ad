"""The one small interface every engine implements.

A backend is loaded once per worker process (``load``). It knows its engine,
the device and the options of the batch in front of it; nothing of HTTP,
settings or requests. Two ways in:

- ``decode(windows, options, temperature)``: one batched engine call on up to
  ``WHISPER_MAX_BATCH`` windows of at most 30 s each, all decoded with the same
  options. This is the path almost every request takes (the scheduler cuts,
  batches and reassembles).
- ``transcribe(audio, options)``: the engine's own sequential long-form loop
  (previous text as prompt, temperature fallback per window), for requests
  that ask for ``condition_on_previous_text``.

Every backend declares, per option, ``None`` (honoured) or why it is not
(``support``); ``serve.core.options.resolve`` turns that into a 400 that names
the option and the backend.
"""

from __future__ import annotations

import abc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np

from ..core.options import Capabilities, DecodeOptions, Options
from ..core.results import Segment, Transcription, Word

SAMPLE_RATE = 16000
TIME_PRECISION = 0.02
"""Seconds per Whisper timestamp token."""

OFF_VALUES = {"vad_filter": False, "condition_on_previous_text": False}
"""An option a backend rejects may still be set to the value that describes what it does anyway."""


@dataclass(frozen=True)
class Device:
    """Where a backend runs and at which precision."""

    kind: str  # "cpu" or "cuda"
    index: int = 0
    compute_type: str = "float32"
    cpu_threads: int = 0

    @property
    def torch_device(self) -> str:
        return "cuda:%d" % self.index if self.kind == "cuda" else "cpu"


@dataclass(frozen=True)
class Decoded:
    """One window's decoding: segments timed from the window's start, and the window's scores."""

    segments: tuple[Segment, ...]
    language: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    resume_at: Optional[float] = None
    """Where the decoder stopped without finishing (an unclosed last segment): the
    text from here on was not produced and must be decoded again. None: done."""


class Backend(abc.ABC):
    name: ClassVar[str]
    """The WHISPER_BACKEND value that selects this backend."""

    support: ClassVar[Mapping[str, Optional[str]]]
    """Every TranscribeOptions field -> None (honoured) or the reason it is not."""

    def __init__(self, device: Device, model_name: str, english_only: bool):
        self.device = device
        self.model_name = model_name
        self.english_only = english_only

    @classmethod
    @abc.abstractmethod
    def load(cls, model_path: Path | str, device: Device, model_name: str) -> "Backend":
        """Load the model at ``model_path`` (a file, directory or hub id in this backend's layout)."""

    @abc.abstractmethod
    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float) -> list[Decoded]:
        """Decode each 16 kHz mono float32 window (at most 30 s) in one batched call.

        ``options.language`` None (multilingual models only) detects each window's language.
        """

    @abc.abstractmethod
    def transcribe(self, audio: np.ndarray, options: Options) -> Transcription:
        """The engine's own sequential long-form transcription of ``audio`` (any length)."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, self.model_name, self.english_only, self.support, OFF_VALUES)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "device": self.device.torch_device,
                "compute_type": self.device.compute_type}


# ---- helpers the engines share --------------------------------------------------------------------


WINDOW_SAMPLES = 30 * SAMPLE_RATE
WINDOW_FRAMES = 3000
"""Whisper's input: 30 s of audio, 3000 log-mel frames."""


def padded_log_mel(log_mel: Callable, window):
    """``log_mel`` of ``window`` padded with silence to 30 s (as Whisper reads a window), for the price of the window.

    ``log_mel(audio)`` is an engine's own feature extractor: frames of
    10 ms, log-compressed, floored at the loudest frame minus 8, then scaled.
    A frame with only silence in reach is that floor wherever it stands, so
    the window plus 1 s of silence is computed and its last frame repeated to
    3000. Same values (float rounding aside); a 4 s clip's features cost a
    tenth as much, which on a GPU is most of a short clip's CPU time.
    """
    if len(window) + SAMPLE_RATE >= WINDOW_SAMPLES:  # nothing to save; exactly the engine's own features
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[:min(len(window), WINDOW_SAMPLES)] = window[:WINDOW_SAMPLES]
        return log_mel(padded)[..., :WINDOW_FRAMES]
    mel = log_mel(np.concatenate([np.asarray(window, dtype=np.float32), np.zeros(SAMPLE_RATE, np.float32)]))
    mel = mel[..., :WINDOW_FRAMES]
    silence = mel[..., -1:]
    missing = WINDOW_FRAMES - mel.shape[-1]
    if isinstance(mel, np.ndarray):
        return np.concatenate([mel, np.repeat(silence, missing, axis=-1)], axis=-1)
    import torch

    return torch.cat([mel, silence.expand(*silence.shape[:-1], missing)], dim=-1)


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: raw bytes over zlib-compressed bytes (a loop compresses well)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def split_by_timestamps(tokens: Sequence[int], timestamp_begin: int,
                        duration: float) -> tuple[list[dict], Optional[float]]:
    """Cut one window's output tokens into timed pieces, as Whisper's own loop does.

    Returns ``([{"start", "end", "tokens"}...], resume_at)``. Text after the last
    closed segment (``<|t0|> text <|t1|><|t1|> text`` with no end) is unfinished:
    it is left out and ``resume_at`` says where to decode again. A window with
    no timestamp pair is one piece over the whole window.
    """
    tokens = [t for t in tokens]
    if not tokens:
        return [], None
    is_time = [t >= timestamp_begin for t in tokens]
    single_ending = len(tokens) >= 2 and not is_time[-2] and is_time[-1]
    pairs = [i for i in range(1, len(tokens)) if is_time[i] and is_time[i - 1]]
    if not pairs:
        times = [t for t in tokens if t >= timestamp_begin]
        end = duration
        if times and times[-1] != timestamp_begin:
            end = min(duration, (times[-1] - timestamp_begin) * TIME_PRECISION)
        start = (times[0] - timestamp_begin) * TIME_PRECISION if times and is_time[0] else 0.0
        return [{"start": start, "end": max(start, end), "tokens": tokens}], None
    cuts = pairs + ([len(tokens)] if single_ending else [])
    pieces, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        pieces.append({"start": (piece[0] - timestamp_begin) * TIME_PRECISION,
                       "end": (piece[-1] - timestamp_begin) * TIME_PRECISION, "tokens": piece})
        last = cut
    resume_at = None
    if not single_ending and any(not t for t in is_time[last:]):
        resume_at = (tokens[last - 1] - timestamp_begin) * TIME_PRECISION
    return pieces, resume_at


def segments_from_pieces(pieces: Sequence[dict], decode_text: Callable[[list[int]], str],
                         timestamp_begin: int, stats: dict, duration: float) -> tuple[Segment, ...]:
    """Segments from ``split_by_timestamps`` pieces (``words`` added by the engine, when asked)."""
    out = []
    for piece in pieces:
        text = decode_text([t for t in piece["tokens"] if t < timestamp_begin])
        if not text.strip():
            continue
        words = None
        if piece.get("words") is not None:
            words = tuple(Word(start=_time(w["start"], duration), end=_time(w["end"], duration), word=w["word"],
                               probability=None if w.get("probability") is None else round(float(w["probability"]), 4))
                          for w in piece["words"])
        out.append(Segment(id=len(out), start=_time(piece["start"], duration), end=_time(piece["end"], duration),
                           text=text, words=words, **stats))
    return tuple(out)


def _time(seconds: float, duration: float) -> float:
    return round(float(min(seconds, duration)), 3)


def window_stats(avg_logprob: float, no_speech_prob: float, text: str, temperature: float) -> dict:
    """The per-window scores every segment of the window carries (as Whisper reports them)."""
    return {"avg_logprob": round(float(avg_logprob), 4), "no_speech_prob": round(float(no_speech_prob), 4),
            "compression_ratio": round(compression_ratio(text), 4), "temperature": float(temperature)}
