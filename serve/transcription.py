"""What goes into a backend and what comes out: options and results.

``TranscribeOptions`` is the one place every transcription option is
declared and documented. ``None`` means "not set by the caller": the backend
uses its default. Backends declare, per option, whether they honour it; an
option set to a value a backend cannot honour is rejected with an error that
names the option and the backend (see ``backends.base.Backend.check``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional


@dataclass(frozen=True)
class TranscribeOptions:
    language: Optional[str] = None
    """ISO 639-1 code of the spoken language (``en``, ``fr``...). None detects it.
    An English-only model (``*.en``) refuses any other language."""

    task: Optional[str] = None
    """``transcribe`` (default) or ``translate`` (into English; multilingual models only)."""

    initial_prompt: Optional[str] = None
    """Text given to the decoder as previous context for the first window
    (spellings, names, style)."""

    temperature: Optional[tuple[float, ...]] = None
    """Sampling temperature(s). Several values mean fallback: when a window's
    output is too repetitive or unlikely, it is decoded again at the next one.
    Default ``(0.0,)``: greedy, deterministic."""

    beam_size: Optional[int] = None
    """Beam search width at temperature 0. Default 1 (greedy)."""

    word_timestamps: Optional[bool] = None
    """Add per-word start/end times (and probabilities where the engine gives them)."""

    vad_filter: Optional[bool] = None
    """Skip non-speech with the Silero VAD before decoding (faster-whisper)."""

    condition_on_previous_text: Optional[bool] = None
    """Give each 30 s window the previous window's text as a prompt. Default
    false: with greedy decoding it let tiny.en fall into a repetition loop that
    dropped 4 of 373 sentences of a 21-minute file; off, nothing was lost."""

    chunk_length_s: Optional[float] = None
    """Length of the chunks long audio is cut into for batched decoding
    (transformers pipeline; faster-whisper's batched pipeline)."""

    batch_size: Optional[int] = None
    """How many chunks are decoded at once (transformers; faster-whisper batched)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def set_options(self) -> dict:
        """Only the options the caller set (not None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def merged_over(self, defaults: "TranscribeOptions") -> "TranscribeOptions":
        """These options, with unset ones taken from ``defaults``."""
        values = asdict(defaults)
        values.update(self.set_options())
        return TranscribeOptions(**values)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: Optional[float] = None


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: Optional[float] = None
    no_speech_prob: Optional[float] = None
    compression_ratio: Optional[float] = None
    temperature: Optional[float] = None
    words: Optional[tuple[Word, ...]] = None


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    """Seconds of audio transcribed."""
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def words(self) -> Optional[tuple[Word, ...]]:
        if any(s.words is None for s in self.segments) or not self.segments:
            return None
        return tuple(w for s in self.segments for w in s.words or ())

    def to_dict(self) -> dict:
        out = {
            "text": self.text,
            "language": self.language,
            "duration": self.duration,
            "segments": [_segment_dict(s) for s in self.segments],
        }
        words = self.words
        if words is not None:
            out["words"] = [asdict(w) for w in words]
        return out


def _segment_dict(segment: Segment) -> dict:
    out = asdict(segment)
    if segment.words is None:
        out.pop("words")
    else:
        out["words"] = [asdict(w) for w in segment.words]
    return out
