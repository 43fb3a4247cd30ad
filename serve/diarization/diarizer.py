"""Diarize one stream of audio: speech regions and their embeddings as the audio arrives, speaker turns at the end.

``Diarizer.feed`` takes 16 kHz float32 audio in pieces of any size: the VAD
(regions.py) hands over each region of speech once it has ended (or
``Diarizer.speech`` is given the regions another VAD found), and its
windows are embedded as soon as a batch of them (``BATCH``, from one region
or several) is waiting (embedding.py), so only the embeddings and at most a
batch of windows' audio are kept: 768 bytes per ``STEP_S`` of speech, 2.8 MB
for an hour. ``finish`` clusters
them (clustering.py, a bounded matrix) and turns the windows' labels into
speaker turns. The whole request's audio goes through one ``Diarizer``, so
labels agree from the first minute to the last.

Windows are ``WINDOW_S`` (1.5 s) every ``STEP_S`` (1 s). Where two windows
overlap, each owns the half nearest its centre, so a turn changes speaker
at most ``STEP_S``/2 from where the voice changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .clustering import cluster
from .embedding import BATCH, WINDOW, CamPlusPlus
from .regions import SAMPLE_RATE, Region, SpeechRegions

STEP_S = 1.0
"""A window every second: on pyannote's sample.wav DER 0.093 against 0.102 every 0.75 s, and 15 % less time
(bench/diarization.py; every 1.5 s, no overlap, DER rose to 0.139). The conversations did not change. Windows of
1 s instead of 1.5 s cost 0.77x, but sample.wav's DER rose to 0.108: not taken."""
STEP = int(STEP_S * SAMPLE_RATE)
MIN_USABLE = STEP
"""A window with less real speech than this (a short region's only window) is assigned, not clustered."""


@dataclass(frozen=True)
class SpeakerTurn:
    """One speaker talking from ``start`` to ``end`` seconds; ``speaker`` numbers voices by first appearance."""

    start: float
    end: float
    speaker: int


def windows(region: Region) -> list[tuple[int, int]]:
    """[start, end) sample indices (in the stream) of the windows covering ``region``: every ``STEP``, the last at its end."""
    if region.end - region.start <= WINDOW:
        return [(region.start, region.end)]
    starts = list(range(region.start, region.end - WINDOW, STEP)) + [region.end - WINDOW]
    return [(s, s + WINDOW) for s in starts]


class Diarizer:
    """Speaker turns of one stream. Not thread-safe: one feeder; ``finish`` once, after the last ``feed``."""

    def __init__(self, embedder: CamPlusPlus, num_speakers: Optional[int] = None,
                 min_speakers: Optional[int] = None, max_speakers: Optional[int] = None):
        self._embedder = embedder
        self._counts = (num_speakers, min_speakers, max_speakers)
        self._regions = SpeechRegions()
        self._spans: list[tuple[int, int]] = []
        """Every window's [start, end) in samples, in stream order."""
        self._embeddings: list[np.ndarray] = []
        """(windows, 192) arrays, in stream order: one per batch embedded."""
        self._waiting: list[np.ndarray] = []
        """Windows' audio not embedded yet: fewer than a batch."""

    def feed(self, samples: np.ndarray) -> None:
        for region in self._regions.feed(samples):
            self._add(region)

    def speech(self, start: int, samples: np.ndarray) -> None:
        """A region of speech found by another VAD (the transcription's), instead of ``feed``."""
        self._add(Region(start, samples))

    def finish(self) -> list[SpeakerTurn]:
        for region in self._regions.finish():
            self._add(region)
        self._embed()
        if not self._spans:
            return []
        spans = np.array(self._spans)
        usable = spans[:, 1] - spans[:, 0] >= MIN_USABLE
        labels = cluster(np.concatenate(self._embeddings), *self._counts, usable=usable)
        return turns(spans, labels)

    def _add(self, region: Region) -> None:
        """The region's windows wait for a whole batch: most regions hold one to four windows, and a forward
        pass of so few leaves the second CPU thread idle (a 10-minute conversation on two threads: 18.2-18.7 s
        a region at a time, 13.7-14.4 s a batch at a time; on one thread no change, 17-18 s)."""
        spans = windows(region)
        self._waiting += [region.samples[a - region.start: b - region.start] for a, b in spans]
        self._spans += spans
        if len(self._waiting) >= BATCH:
            self._embed()
        self._waiting = [w if w.base is None else w.copy() for w in self._waiting]  # those left: not the whole region

    def _embed(self) -> None:
        if self._waiting:
            self._embeddings.append(self._embedder.embed(self._waiting))
            self._waiting = []


def turns(spans: np.ndarray, labels: np.ndarray) -> list[SpeakerTurn]:
    """Speaker turns from windows' [start, end) samples (in order) and labels, speakers renumbered by first appearance."""
    order = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    out: list[SpeakerTurn] = []
    for i, ((start, end), label) in enumerate(zip(spans, labels)):
        if i > 0 and spans[i - 1][1] > start:  # overlapping the previous window: the later half is this one's
            start = (start + spans[i - 1][1]) // 2
        if i + 1 < len(spans) and spans[i + 1][0] < end:
            end = (end + spans[i + 1][0]) // 2
        speaker = order[int(label)]
        if out and out[-1].speaker == speaker and out[-1].end >= start / SAMPLE_RATE:
            out[-1] = SpeakerTurn(out[-1].start, end / SAMPLE_RATE, speaker)
        else:
            out.append(SpeakerTurn(start / SAMPLE_RATE, end / SAMPLE_RATE, speaker))
    return out
