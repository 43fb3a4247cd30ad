"""What a transcription is: words, segments, and the whole.

Engines return ``Segment``s (times relative to the audio they were given);
the scheduler shifts them to the request's time and assembles the
``Transcription`` the formats render.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: Optional[float] = None
    speaker: Optional[str] = None
    """``SPEAKER_00``... when the request asked for diarization."""


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
    speaker: Optional[str] = None
    """``SPEAKER_00``... when the request asked for diarization: one voice per segment."""


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    """Seconds of audio transcribed."""
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = ()
    """What the decoder reported about damaged input (a cut or corrupt file): the
    transcript is what could be decoded. Rendered only when there is something to say."""
    speakers: Optional[tuple["SpeakerTime", ...]] = None
    """Who speaks, in order of first appearance, when the request asked for diarization (else None)."""

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
            "segments": [segment_dict(s) for s in self.segments],
        }
        words = self.words
        if words is not None:
            out["words"] = [word_dict(w) for w in words]
        if self.speakers is not None:
            out["speakers"] = [asdict(s) for s in self.speakers]
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class SpeakerTime:
    speaker: str
    """``SPEAKER_00``..., or the name of a known speaker it matched."""
    speaking_time: float
    """Seconds this speaker talks in the audio."""


def segment_dict(segment: Segment) -> dict:
    out = asdict(segment)
    if segment.words is None:
        out.pop("words")
    else:
        out["words"] = [word_dict(w) for w in segment.words]
    if segment.speaker is None:
        out.pop("speaker")
    return out


def word_dict(word: Word) -> dict:
    """A word as JSON; ``speaker`` only when diarized, so undiarized answers keep their shape."""
    out = asdict(word)
    if word.speaker is None:
        out.pop("speaker")
    return out
