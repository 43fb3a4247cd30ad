"""Cut a request's audio into the windows the engine decodes, as the audio arrives.

Whisper decodes 30 s at a time. A request's audio becomes a sequence of
``Window``s of at most ``chunk_length_s``, each made of ``Piece``s of the
original audio:

- with the VAD (``vad_filter``, the default): Silero finds speech; speech
  regions separated by short pauses are joined into one window, longer pauses
  shrink to ``MAX_GAP_S``, and stretches with no speech are never decoded (on
  silence and noise Whisper invents text). Regions longer than a window are
  split by the VAD at its quietest point.
- without: consecutive windows of the whole audio, each cut at the quietest
  moment of its last seconds, so no word is cut in two.

Sequential requests (``condition_on_previous_text``) get the same windows;
the scheduler decodes them one at a time, each with the text before it as
its prompt.

Memory stays bounded: the VAD reads ``VAD_BLOCK_S`` at a time from the PCM file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Optional

import numpy as np

from .audio import SAMPLE_RATE, AudioFile
from .options import Options

VAD_BLOCK_S = 120.0
"""Audio the VAD looks at per step: the first windows are ready once this much is decoded."""
MAX_GAP_S = 1.0
"""A pause inside a window is kept up to this long; Whisper needs some silence to close a segment."""
CUT_SEARCH_S = 5.0
"""Without the VAD, a window is cut at the quietest 100 ms of its last seconds."""
_HAIR = 1e-6 / SAMPLE_RATE
"""A millionth of a sample, so the float arithmetic of the VAD's length limit never lands just under the limit
faster-whisper computes with the padding (both are compared with whole samples)."""


@dataclass(frozen=True)
class Piece:
    """Samples [start, end) of the request's audio, placed at ``at`` samples into its window."""

    start: int
    end: int
    at: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Window:
    """Up to 30 s of one request's audio, to decode in one go (or a long one, for sequential decoding)."""

    pieces: tuple[Piece, ...]

    @property
    def length(self) -> int:
        last = self.pieces[-1]
        return last.at + last.length

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def end(self) -> int:
        return self.pieces[-1].end

    def audio(self, source: AudioFile) -> np.ndarray:
        out = np.zeros(self.length, dtype=np.float32)
        for p in self.pieces:
            chunk = source.read(p.start, p.end)
            out[p.at:p.at + len(chunk)] = chunk
        return out

    def source_time(self, seconds: float) -> float:
        """A time in this window -> the same moment in the request's audio (a gap maps to its piece's end)."""
        sample = seconds * SAMPLE_RATE
        chosen = self.pieces[0]
        for p in self.pieces:
            if sample >= p.at:
                chosen = p
        return (chosen.start + min(max(sample - chosen.at, 0), chosen.length)) / SAMPLE_RATE

    def after(self, seconds: float) -> "Window | None":
        """What is left of this window after ``seconds`` into it (to decode again), or None."""
        cut = int(seconds * SAMPLE_RATE)
        pieces = []
        for p in self.pieces:
            if p.at + p.length <= cut:
                continue
            skip = max(0, cut - p.at)
            pieces.append((p.start + skip, p.end))
        if not pieces or sum(e - s for s, e in pieces) < SAMPLE_RATE // 2:
            return None
        return join(pieces, MAX_GAP_S)


def join(regions: list[tuple[int, int]], max_gap_s: float) -> Window:
    """One window of these source regions, in order, with gaps between them capped at ``max_gap_s``."""
    pieces, at, previous_end = [], 0, None
    for start, end in regions:
        if previous_end is not None:
            start = max(start, previous_end)  # padded VAD regions may touch
            at += min(start - previous_end, int(max_gap_s * SAMPLE_RATE))
        pieces.append(Piece(start, end, at))
        at += end - start
        previous_end = end
    return Window(tuple(pieces))


def windows(audio: AudioFile, options: Options,
            vad_slot: Callable[[], ContextManager] = contextlib.nullcontext,
            speech: Optional[Callable[[list[tuple[int, int]]], None]] = None) -> Iterator[Window]:
    """The request's windows in order, yielded as soon as the decoded audio allows.

    ``vad_slot`` is held around each VAD step (the scheduler bounds how many run at once). ``speech``, with
    the VAD, is given the speech regions found, unpadded, in order, as each block's are final.
    """
    if options.vad_filter:
        yield from _pack(_speech(audio, options.chunk_length_s, vad_slot, speech), options.chunk_length_s)
    else:
        for start, end in _cuts(audio, options.chunk_length_s):
            yield Window((Piece(start, end, 0),))


def _pack(regions: Iterator[tuple[int, int]], chunk_length_s: float) -> Iterator[Window]:
    """Consecutive speech regions joined into windows of at most ``chunk_length_s``."""
    limit = int(chunk_length_s * SAMPLE_RATE)
    current: list[tuple[int, int]] = []
    for region in regions:
        if current and join(current + [region], MAX_GAP_S).length > limit:
            yield join(current, MAX_GAP_S)
            current = []
        current.append(region)
    if current:
        yield join(current, MAX_GAP_S)


def _cuts(audio: AudioFile, chunk_length_s: float) -> Iterator[tuple[int, int]]:
    """Consecutive (start, end) of at most ``chunk_length_s``, cut at the quietest moment of their ends."""
    size = int(chunk_length_s * SAMPLE_RATE)
    start = 0
    while True:
        available = audio.wait_for(start + size + SAMPLE_RATE)
        if available <= start:
            return
        if audio.done and available - start <= size:
            yield start, available
            return
        cut = start + quietest(audio.read(start, start + size), min(CUT_SEARCH_S, chunk_length_s / 3))
        yield start, cut
        start = cut


def quietest(audio: np.ndarray, search_s: float) -> int:
    """Index in the last ``search_s`` of ``audio`` at the middle of its quietest 100 ms."""
    frame = SAMPLE_RATE // 10
    begin = max(0, len(audio) - int(search_s * SAMPLE_RATE))
    tail = audio[begin:]
    n = len(tail) // frame
    if n < 2:
        return len(audio)
    energy = (tail[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    return begin + int(np.argmin(energy)) * frame + frame // 2


def _speech(audio: AudioFile, chunk_length_s: float, vad_slot: Callable[[], ContextManager],
            found: Optional[Callable[[list[tuple[int, int]]], None]] = None) -> Iterator[tuple[int, int]]:
    """Silero VAD speech regions (each at most ``chunk_length_s``), found block by block as audio arrives.

    A region that touches the end of a block may go on in the next: the next
    block starts where it started, so it is found whole. ``found`` is given
    each block's regions unpadded, as they are final (a diarized request's
    speaker embedder reads them: the VAD runs once per request).
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    # faster-whisper's batched pipeline settings: split long speech at short pauses. Found unpadded, then
    # padded as faster-whisper pads (``pad``): its limit on a region's length counts the padding in.
    padding = VadOptions().speech_pad_ms * SAMPLE_RATE // 1000
    vad = VadOptions(max_speech_duration_s=chunk_length_s - 2 * padding / SAMPLE_RATE + _HAIR,
                     min_silence_duration_ms=160, speech_pad_ms=0)
    block = int(VAD_BLOCK_S * SAMPLE_RATE)
    start = 0
    while True:
        available = audio.wait_for(start + block)
        if available <= start:
            return
        end = min(start + block, available)
        last = audio.done and end >= available
        with vad_slot():
            raw = [(start + r["start"], start + r["end"])
                   for r in get_speech_timestamps(audio.read(start, end), vad)]
        padded = pad(raw, padding, start, end)
        if not last and padded and padded[-1][1] >= end - padding and padded[-1][0] > start:
            resume = padded.pop()[0]  # may continue past this block: look again from its start
            raw.pop()
        else:
            resume = end
        if found is not None and raw:
            found(raw)
        yield from padded
        if last:
            return
        start = resume


def pad(regions: list[tuple[int, int]], padding: int, start: int, end: int) -> list[tuple[int, int]]:
    """Speech regions found in [start, end) padded by ``padding`` samples on each side, as faster-whisper
    pads them: a gap shorter than two paddings is shared at its middle, and nothing goes past the block."""
    out = [list(r) for r in regions]
    for i, region in enumerate(out):
        if i == 0:
            region[0] = max(start, region[0] - padding)
        if i + 1 < len(out):
            gap = out[i + 1][0] - region[1]
            share = gap // 2 if gap < 2 * padding else padding
            region[1] += share
            out[i + 1][0] = max(start, out[i + 1][0] - share)
        else:
            region[1] = min(end, region[1] + padding)
    return [(a, b) for a, b in out]
