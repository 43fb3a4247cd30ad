"""Who said which words: speaker turns laid over a transcript's segments and words.

As WhisperX does, a word (or a segment without words) takes the speaker whose
turns overlap it most; a word that falls in no turn (Whisper's timestamps
may stray a little into a pause) takes the nearest turn's speaker, since a
word is always somebody's. Where turns overlap (two voices at once, as
pyannote reports them) the speaker with the most time over the word wins:
overlapping speech goes to the dominant speaker.

A segment whose words change speaker is split at each change, so a segment
never holds two voices; a segment without words cannot be split and takes
its dominant speaker. Labels are ``SPEAKER_00``, ``SPEAKER_01``... numbered
in the order the voices are first heard.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional, Sequence

from ..core.results import Segment, Word
from .diarizer import SpeakerTurn


def label(speaker: int) -> str:
    return f"SPEAKER_{speaker:02d}"


def speaker_of(start: float, end: float, turns: Sequence[SpeakerTurn]) -> Optional[int]:
    """The speaker of [start, end): most time overlapping it, else the nearest turn's; None without turns."""
    if not turns:
        return None
    overlap: dict[int, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda s: (overlap[s], -s))
    return min(turns, key=lambda t: max(t.start - end, start - t.end)).speaker


def assign(segments: Sequence[Segment], turns: Sequence[SpeakerTurn],
           names: Mapping[int, str] = {}) -> tuple[Segment, ...]:
    """``segments`` with ``speaker`` on each segment and word, split where the words change speaker; ids renumbered.

    ``names``: a speaker's name instead of its ``SPEAKER_nn`` label (known speakers)."""
    out: list[Segment] = []
    for segment in segments:
        if not segment.words:
            out.append(replace(segment, speaker=_label(speaker_of(segment.start, segment.end, turns), names)))
            continue
        words = [replace(w, speaker=_label(speaker_of(w.start, w.end, turns), names)) for w in segment.words]
        runs = _runs(words)
        if len(runs) == 1:
            out.append(replace(segment, words=tuple(words), speaker=words[0].speaker))
            continue
        for i, run in enumerate(runs):
            out.append(replace(segment, start=segment.start if i == 0 else run[0].start,
                               end=segment.end if i == len(runs) - 1 else run[-1].end,
                               text="".join(w.word for w in run), words=tuple(run), speaker=run[0].speaker))
    return tuple(replace(s, id=i) for i, s in enumerate(out))


def speaking_times(turns: Sequence[SpeakerTurn], names: Mapping[int, str] = {}) -> dict[str, float]:
    """Each speaker's total speaking time in seconds (overlapping turns of one speaker counted once), by label."""
    times: dict[str, float] = {}
    for speaker in sorted({t.speaker for t in turns}):
        spans = sorted((t.start, t.end) for t in turns if t.speaker == speaker)
        total, reach = 0.0, float("-inf")
        for start, end in spans:
            total += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        times[_label(speaker, names)] = round(total, 3)
    return times


def _label(speaker: Optional[int], names: Mapping[int, str] = {}) -> Optional[str]:
    return None if speaker is None else names.get(speaker) or label(speaker)


def _runs(words: list[Word]) -> list[list[Word]]:
    runs: list[list[Word]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs
