"""Packing (opt-in, ``WHISPER_PACKING=on``): short windows of several requests share one 30 s engine window.

Whisper's encoder always runs on 30 s, so three 5 s clips packed 2 s apart
cost one encoder pass instead of three: on a 2-core CPU, 8 clients got x1.8-2.2
over one by one with packing, x1.3 without. The price: a packed clip is
decoded with its neighbours' audio and text as context, so its words depend
on who else was speaking at that moment (on 25 hold-out clips from 8 clients,
29 of 50 answers differed from the same file sent alone; none took another
clip's words). That breaks caching and reproducibility, hence off by default.

What packing guarantees, checked after every packed decode:

- no request gets words from another's audio: a segment that straddles two
  requests or lies in the gap between them sends every request of the pack
  back to be decoded alone;
- each request's scores come from its own tokens (``decoding.own_scores``);
- a request whose own text is doubtful (no text, a loop, too unlikely, speech
  left after its last segment) is decoded again alone; the others keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .decoding import is_silence, needs_fallback, own_scores, speech_after
from .engine import Decoded
from .results import Segment

PACK_GAP_S = 2.0
"""Silence between requests packed into one engine window: at 0.5 s a packed
window fell into a repetition loop; at 1 and 2 s no segment straddled two clips."""
PACK_GAP = int(PACK_GAP_S * SAMPLE_RATE)


def fits(used: int, size: int, limit: int) -> bool:
    """Whether a window of ``size`` samples fits after ``used`` samples of a pack of at most ``limit``."""
    return used + PACK_GAP + size <= limit


def pack_audio(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The windows in order, ``PACK_GAP_S`` of silence apart."""
    if len(parts) == 1:
        return parts[0]
    gap = np.zeros(PACK_GAP, dtype=np.float32)
    return np.concatenate([x for i, part in enumerate(parts) for x in ((gap, part) if i else (part,))])


def offsets(lengths: Sequence[int]) -> list[int]:
    """Each packed window's first sample in the pack."""
    out, at = [], 0
    for n in lengths:
        out.append(at)
        at += n + PACK_GAP
    return out


@dataclass(frozen=True)
class Unpacked:
    """One request's part of a packed decode: its segments (pack time, own scores), or None to decode it alone."""

    offset_s: float
    segments: Optional[tuple[Segment, ...]]


def unpack(lengths: Sequence[int], audio: np.ndarray, d: Decoded) -> list[Unpacked]:
    """Give each request of a pack the segments that lie within its own audio, or send it back."""
    starts = offsets(lengths)
    spans = [(a / SAMPLE_RATE, (a + n) / SAMPLE_RATE) for a, n in zip(starts, lengths)]
    owners: list[list[int]] = [[] for _ in lengths]
    whole_doubt = needs_fallback(d) or is_silence(d) or d.resume_at is not None or d.segment_logprobs is None
    for k, s in enumerate(d.segments):
        touched = [i for i, (a, b) in enumerate(spans) if s.start < b and s.end > a]
        if len(touched) != 1:
            whole_doubt = True  # straddles two requests (or lies in a gap): never guess whose words they are
            break
        owners[touched[0]].append(k)
    if whole_doubt:
        return [Unpacked(a, None) for a, _ in spans]
    out = []
    for (a, b), mine, start, n in zip(spans, owners, starts, lengths):
        segments = [d.segments[k] for k in mine]
        scores = own_scores(segments, [d.segment_logprobs[k] for k in mine])  # type: ignore[index]
        own = replace(d, segments=tuple(segments), avg_logprob=scores["avg_logprob"] or 0.0,
                      compression_ratio=scores["compression_ratio"], no_speech_prob=0.0)
        doubtful = not segments or needs_fallback(own) or speech_after(audio[start:start + n], segments[-1].end - a)
        out.append(Unpacked(a, None if doubtful else tuple(replace(s, **scores) for s in segments)))
    return out
