"""What every backend shares: loading, and the helpers that turn an engine's tokens into segments.

A backend implements ``serve.core.engine.Engine`` (the interface the core
calls: one batched ``decode`` of short windows) for one engine, and adds
``load``. It is loaded once per worker process; it knows its engine, the
device and the options of the batch in front of it, nothing of HTTP,
settings or requests.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.decoding import compression_ratio
from ..core.engine import Decoded, Device, Engine
from ..core.results import Segment, Word

SAMPLE_RATE = 16000
TIME_PRECISION = 0.02
"""Seconds per Whisper timestamp token."""


class Backend(Engine):
    """An ``Engine`` that can be loaded from a model artifact."""

    @classmethod
    @abc.abstractmethod
    def load(cls, model_path: Path | str, device: Device, model_name: str) -> "Backend":
        """Load the model at ``model_path`` (a file, directory or hub id in this backend's layout)."""


# ---- helpers the engines share --------------------------------------------------------------------


WINDOW_SAMPLES = 30 * SAMPLE_RATE
WINDOW_FRAMES = 3000
"""Whisper's input: 30 s of audio, 3000 log-mel frames."""
HOP_LENGTH = 160
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH


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


def alignment_frames(pieces: Sequence[dict], samples: int) -> int:
    """Log-mel frames of a window to align its pieces' words against: up to the end of its last piece.

    The pieces' text says nothing of the audio after their end (text the decoder
    left unfinished is dropped; speech it did not reach is decoded again from
    there). Aligned against the whole window, a text that covers its first seconds
    may be placed anywhere in it: the cross-attention alignment (DTW) put
    "The old captain ..." (0-4 s of a 26.7 s window) at 20-26.6 s.
    """
    frames = min(samples // HOP_LENGTH, WINDOW_FRAMES)
    if pieces:
        frames = min(frames, max(2, round(max(p["end"] for p in pieces) * FRAMES_PER_SECOND)))
    return frames


def split_by_timestamps(tokens: Sequence[int], timestamp_begin: int,
                        duration: float) -> tuple[list[dict], Optional[float]]:
    """Cut one window's output tokens into timed pieces, as Whisper's own loop does.

    Returns ``([{"start", "end", "tokens", "at"}...], resume_at)`` (``at``: the piece's first
    token's index in ``tokens``). Text after the last
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
        if times and times[-1] != timestamp_begin and is_time[-1]:  # a closing timestamp; a start one is no end
            end = min(duration, (times[-1] - timestamp_begin) * TIME_PRECISION)
        start = (times[0] - timestamp_begin) * TIME_PRECISION if times and is_time[0] else 0.0
        return [{"start": start, "end": max(start, end), "tokens": tokens, "at": 0}], None
    cuts = pairs + ([len(tokens)] if single_ending else [])
    pieces, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        pieces.append({"start": (piece[0] - timestamp_begin) * TIME_PRECISION,
                       "end": (piece[-1] - timestamp_begin) * TIME_PRECISION, "tokens": piece, "at": last})
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


def decoded_window(pieces: Sequence[dict], resume_at: Optional[float], decode_text: Callable[[list[int]], str],
                   timestamp_begin: int, duration: float, *, language: str, avg_logprob: float,
                   no_speech_prob: float, text: str, temperature: float,
                   token_logprobs: Optional[Sequence[float]] = None) -> Decoded:
    """One window's ``Decoded`` from its ``split_by_timestamps`` pieces and the engine's scores.

    ``token_logprobs`` (one per token of the split sequence, when the scheduler asked
    for scores) gives each segment the sum of its own tokens' log probabilities.
    """
    kept = [p for p in pieces if decode_text([t for t in p["tokens"] if t < timestamp_begin]).strip()]
    stats = window_stats(avg_logprob, no_speech_prob, text, temperature)
    segments = segments_from_pieces(kept, decode_text, timestamp_begin, stats, duration)
    logprobs = None
    if token_logprobs is not None:
        logprobs = tuple((round(float(sum(token_logprobs[p["at"]:p["at"] + len(p["tokens"])])), 4), len(p["tokens"]))
                         for p in kept)
    return Decoded(segments, language, stats["avg_logprob"], stats["no_speech_prob"], stats["compression_ratio"],
                   temperature, resume_at, logprobs)


def _time(seconds: float, duration: float) -> float:
    return round(float(min(seconds, duration)), 3)


def window_stats(avg_logprob: float, no_speech_prob: float, text: str, temperature: float) -> dict:
    """The per-window scores every segment of the window carries (as Whisper reports them)."""
    return {"avg_logprob": round(float(avg_logprob), 4), "no_speech_prob": round(float(no_speech_prob), 4),
            "compression_ratio": round(compression_ratio(text), 4), "temperature": float(temperature)}
