"""A file in, a ``Transcription`` out: decode window by window, run the backend, join.

This is the flow every entry point shares (the HTTP server, the benchmark,
the tests): ``audio.iter_windows`` -> ``Backend.transcribe`` -> ``join``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from .audio import iter_windows
from .backends.base import Backend
from .transcription import Segment, TranscribeOptions, Transcription, Word


def transcribe_file(backend: Backend, path: Path | str, options: TranscribeOptions = TranscribeOptions(),
                    window_seconds: float | None = None) -> Transcription:
    """Transcribe an audio/video file of any length with ``backend``.

    ``window_seconds`` defaults to the backend's settings (WHISPER_WINDOW_SECONDS).
    Options are checked before any decoding, so a bad option fails fast.
    """
    backend.check(options.merged_over(backend.settings.defaults))
    if window_seconds is None:
        window_seconds = backend.settings.window_seconds
    parts = []
    for window in iter_windows(path, window_seconds):
        result = backend.transcribe(window.audio, options)
        parts.append((window.offset, result))
    return join(parts)


def join(parts: Iterable[tuple[float, Transcription]]) -> Transcription:
    """Join per-window transcriptions, shifting times by each window's offset."""
    parts = list(parts)
    if len(parts) == 1 and parts[0][0] == 0.0:
        return parts[0][1]
    segments: list[Segment] = []
    for offset, result in parts:
        for seg in result.segments:
            segments.append(replace(
                seg,
                id=len(segments),
                start=round(seg.start + offset, 3),
                end=round(seg.end + offset, 3),
                words=None if seg.words is None else tuple(_shift(w, offset) for w in seg.words),
            ))
    text = " ".join(r.text.strip() for _, r in parts if r.text.strip())
    duration = max((off + r.duration for off, r in parts), default=0.0)
    return Transcription(text=text, language=parts[0][1].language if parts else "", duration=round(duration, 3),
                         segments=tuple(segments))


def _shift(word: Word, offset: float) -> Word:
    return replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))
