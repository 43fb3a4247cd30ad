"""Where someone speaks: Silero VAD speech regions of a stream, found block by block as its audio arrives.

The same Silero model and the same ``get_speech_timestamps`` the transcription
path runs (faster-whisper's; see serve/core/segments.py), with the padding
narrowed: transcription pads speech by 400 ms so no word is cut, but a
speaker's turn padded so would spill over the next speaker's. Only the audio
of the block being looked at is held (``BLOCK_S``, plus a region that runs on
past it), so memory does not grow with the stream.

A request with the VAD (``vad_filter``, the default) does not run this: its
diarization reads the regions the transcription's VAD found, padded the same
way (request.py), so the VAD runs once. This finds the speech of a request
without the VAD, and of known speakers' reference clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
BLOCK_S = 60.0
"""Audio the VAD looks at per step."""
MAX_REGION_S = 20.0
"""Longer speech is split by the VAD at its quietest pause (never longer than a block)."""
PAD_MS = 60
MIN_SILENCE_MS = 160
"""A pause this long ends a region: faster-whisper's batched setting, and the pause between two speakers."""


@dataclass(frozen=True)
class Region:
    """Speech found in the stream: its first sample's index and its samples (16 kHz float32)."""

    start: int
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


class SpeechRegions:
    """Feed audio in pieces of any size; get each region of speech once it is known to have ended."""

    def __init__(self) -> None:
        from faster_whisper.vad import VadOptions

        self._options = VadOptions(max_speech_duration_s=MAX_REGION_S, min_silence_duration_ms=MIN_SILENCE_MS,
                                   speech_pad_ms=PAD_MS)
        self._buffer = np.zeros(0, np.float32)
        self._pieces: list[np.ndarray] = []
        """Audio fed since the buffer was last joined (joined once a block is there, not on every piece)."""
        self._pending = 0
        self._offset = 0
        """The stream's sample index of ``_buffer[0]``."""

    def feed(self, samples: np.ndarray) -> list[Region]:
        """The regions that ended within the audio fed so far (and not returned before)."""
        self._pieces.append(np.asarray(samples, np.float32))
        self._pending += len(samples)
        out = []
        if len(self._buffer) + self._pending >= BLOCK_S * SAMPLE_RATE:
            self._join()
            while len(self._buffer) >= BLOCK_S * SAMPLE_RATE:
                out += self._look(final=False)
        return out

    def finish(self) -> list[Region]:
        """The regions left at the end of the stream."""
        self._join()
        return self._look(final=True) if len(self._buffer) else []

    def _join(self) -> None:
        self._buffer = np.concatenate([self._buffer, *self._pieces])
        self._pieces, self._pending = [], 0

    def _look(self, final: bool) -> list[Region]:
        from faster_whisper.vad import get_speech_timestamps

        block = self._buffer[: int(BLOCK_S * SAMPLE_RATE)] if not final else self._buffer
        found = [(r["start"], r["end"]) for r in get_speech_timestamps(block, self._options)]
        resume = len(block)
        if not final and found and found[-1][1] >= len(block) - MIN_SILENCE_MS * SAMPLE_RATE // 1000 \
                and found[-1][0] > 0:
            resume = found.pop()[0]  # may go on past this block: look again from its start
        regions = [Region(self._offset + a, block[a:b].copy()) for a, b in found]
        self._buffer = self._buffer[resume:]
        self._offset += resume
        return regions
