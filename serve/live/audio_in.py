"""A live session's input audio, as it arrives, -> 16 kHz int16 samples (what the VAD and Whisper take).

PCM16 at 16 kHz passes through. G.711 (8 kHz) is expanded by a 256-entry
table built from the ITU-T G.711 definition (``audioop`` is gone from Python
3.13). 24 kHz and 8 kHz go through one ``soxr.ResampleStream`` per session:
a frame may end anywhere, and the filter's state carries over to the next
frame, so a stream cut into frames comes out as if resampled whole.

The resampler's delay: soxr returns output time-aligned with the input
(no shift), but holds back its filter's tail until more audio arrives. With
the HQ quality used here, measured for frames of any size, at most about
37 ms (24 kHz input) or 116 ms (8 kHz) of the audio fed so far is still held;
the output total tracks ``samples_in * 16000 / rate`` minus that. ``flush``
hands it over (a client's commit at the end of a stream); live, the next
frame pushes it out.
"""

from __future__ import annotations

import numpy as np
import soxr

from .protocol import MAX_FRAME_BYTES, AudioFormat, ProtocolError

__all__ = ["AudioInput", "MAX_FRAME_BYTES", "SAMPLE_RATE", "ALAW", "MULAW"]

SAMPLE_RATE = 16000
"""What comes out: Whisper's rate."""

RESAMPLER_QUALITY = "HQ"
"""soxr's default: flat to well above speech's band at both input rates; VHQ adds delay for nothing audible."""


def _mulaw_table() -> np.ndarray:
    """G.711 mu-law: each code (stored inverted) is sign, 3-bit segment, 4-bit step; the value is
    ((step * 2 + 33) << segment) - 33 in 14-bit units, scaled by 4 to 16 bits (0xFF -> 0, 0x00 -> -32124)."""
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    segment, step = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((step << 3) + 0x84) << segment) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law: each code (even bits inverted) is sign (1: positive), 3-bit segment, 4-bit step;
    segment 0 is linear, each next one doubles the step, in 13-bit units scaled by 8 (0xD5 -> 8, 0x55 -> -8)."""
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment, step = (code >> 4) & 0x07, code & 0x0F
    magnitude = np.where(segment == 0, (step << 4) + 8, ((step << 4) + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW = _mulaw_table()
ALAW = _alaw_table()
MULAW.flags.writeable = False
ALAW.flags.writeable = False


class AudioInput:
    """One session's input audio decoder: bytes in the session's format -> int16 samples at 16 kHz.

    Stateful (the resampler carries its filter across frames): one per session, and a new one when an
    update changes the format. Not thread-safe; one session feeds it in order.
    """

    def __init__(self, fmt: AudioFormat):
        self.format = fmt
        self._table = {"pcmu": MULAW, "pcma": ALAW}.get(fmt.encoding)
        self._resampler = (None if fmt.rate == SAMPLE_RATE
                           else soxr.ResampleStream(fmt.rate, SAMPLE_RATE, 1, dtype="int16", quality=RESAMPLER_QUALITY))

    def feed(self, data: bytes) -> np.ndarray:
        """One frame's audio -> the 16 kHz samples it completes (a resampler keeps a few ms back).

        Raises ProtocolError ``frame_too_large`` over MAX_FRAME_BYTES, ``invalid_audio`` for PCM16 that
        is not whole 2-byte samples (the frame is dropped; the stream goes on).
        """
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError("frame_too_large", f"an audio frame may hold at most {MAX_FRAME_BYTES} bytes, "
                                f"this one has {len(data)}: send it in smaller frames")
        if self._table is not None:
            samples = self._table[np.frombuffer(data, dtype=np.uint8)]
        else:
            if len(data) % 2:
                raise ProtocolError("invalid_audio", f"PCM16 audio is whole 2-byte samples; this frame has "
                                    f"{len(data)} bytes, an odd count (the frame was dropped)")
            samples = np.frombuffer(data, dtype="<i2").astype(np.int16)  # a copy, in native byte order
        if self._resampler is None or not len(samples):
            return samples
        return self._resampler.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds (its filter's tail), then a fresh start: for the end of a
        stream. Audio fed after a flush starts a new filter (a few ms of ramp; nothing is lost)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._resampler.clear()
        return tail
