"""Input audio: PCM16 passes through, G.711 expands by ITU-T G.711's tables, 24 and 8 kHz resample to 16 kHz
across frames cut anywhere, with the output length tracking the input within the resampler's delay."""

from __future__ import annotations

import numpy as np
import pytest

from serve.live.audio_in import ALAW, MAX_FRAME_BYTES, MULAW, SAMPLE_RATE, AudioInput
from serve.live.protocol import AudioFormat, ProtocolError

HELD_BACK_S = {24000: 0.040, 8000: 0.120}
"""Most audio the resampler may hold back at any moment (measured: 37 ms and 116 ms, see audio_in)."""


# ---- a straightforward G.711 encoder, from the standard's description, for round trips ----------------


def mulaw_encode(x: int) -> int:
    sign = 0x80 if x < 0 else 0
    biased = min(abs(x), 32635) + 0x84
    segment = biased.bit_length() - 8  # biased >= 0x84 = 2**7 + 4: segment 0 .. 7
    step = (biased >> (segment + 3)) & 0x0F
    return ~(sign | segment << 4 | step) & 0xFF


def alaw_encode(x: int) -> int:
    sign = 0 if x < 0 else 0x80
    magnitude = min(abs(x), 32767) >> 3  # 13-bit
    if magnitude < 32:
        segment, step = 0, magnitude >> 1
    else:
        segment = magnitude.bit_length() - 5
        step = (magnitude >> segment) & 0x0F
    return (sign | segment << 4 | step) ^ 0x55


def encode(samples: np.ndarray, encoder) -> bytes:
    return bytes(encoder(int(x)) for x in samples)


def test_known_g711_values():
    assert (MULAW[0xFF], MULAW[0x7F], MULAW[0x00], MULAW[0x80]) == (0, 0, -32124, 32124)
    assert (MULAW[0xFE], MULAW[0x7E], MULAW[0xEF]) == (8, -8, 132)  # the smallest step; segment 1's first
    assert (ALAW[0xD5], ALAW[0x55], ALAW[0xAA], ALAW[0x2A]) == (8, -8, 32256, -32256)
    for table in (MULAW, ALAW):
        assert table.dtype == np.int16 and table.shape == (256,) and not table.flags.writeable
    # Each table is its own mirror: the same magnitudes, both signs.
    assert sorted(MULAW[:128]) == sorted(-MULAW[128:]) and sorted(ALAW[:128]) == sorted(-ALAW[128:])
    assert len(set(MULAW.tolist())) == 255 and len(set(ALAW.tolist())) == 256  # mu-law has +0 and -0


@pytest.mark.parametrize("table, encoder", [(MULAW, mulaw_encode), (ALAW, alaw_encode)], ids=["mu-law", "A-law"])
def test_g711_round_trips(table, encoder):
    for code in range(256):
        back = encoder(int(table[code]))
        assert back == code or (table is MULAW and code == 0x7F and back == 0xFF)  # -0 encodes as +0
    # Every 16-bit value comes back within the quantization step around it (clipped past the largest code).
    levels = np.unique(table.astype(np.int32))
    x = np.arange(-32768, 32768)
    y = table[np.frombuffer(encode(x, encoder), dtype=np.uint8)].astype(np.int32)
    inside = (x >= levels[0]) & (x <= levels[-1])
    upper = np.searchsorted(levels, x[inside])
    lower = np.maximum(upper - 1, 0)
    step = levels[upper] - levels[lower]
    assert np.all(np.abs(y[inside] - x[inside]) <= np.maximum(step, 1))
    assert np.all(y[x > levels[-1]] == levels[-1]) and np.all(y[x < levels[0]] == levels[0])


# ---- frames -------------------------------------------------------------------------------------------


def sine(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def uneven(data: bytes, unit: int, seed: int = 7, most: int = 4000):
    """``data`` in frames of random lengths (whole ``unit``s), 1 unit to ``most`` bytes."""
    rng, at = np.random.default_rng(seed), 0
    while at < len(data):
        n = int(rng.integers(1, most // unit + 1)) * unit
        yield data[at:at + n]
        at += n


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_pcm16_at_16_khz_passes_through():
    samples = sine(16000, 0.5)
    audio = AudioInput(AudioFormat("pcm16", 16000))
    data = samples.astype("<i2").tobytes()
    out = np.concatenate([audio.feed(frame) for frame in uneven(data, 2)])
    assert out.dtype == np.int16 and np.array_equal(out, samples)
    frame = bytearray(data[:64])
    first = audio.feed(frame)
    frame[:] = bytes(64)
    assert first.flags.writeable and np.array_equal(first, samples[:32])  # a copy, not a view of the frame
    assert audio.feed(b"").shape == (0,) and audio.flush().shape == (0,)


@pytest.mark.parametrize("fmt", [AudioFormat("pcm16", 24000), AudioFormat("pcm16", 16000),
                                 AudioFormat("pcmu", 8000), AudioFormat("pcma", 8000)],
                         ids=lambda f: f"{f.encoding}-{f.rate}")
def test_frames_of_any_length(fmt):
    samples = sine(fmt.rate, 0.2)
    if fmt.encoding == "pcm16":
        data = samples.astype("<i2").tobytes()
    else:
        data = encode(samples, mulaw_encode if fmt.encoding == "pcmu" else alaw_encode)
    one = AudioInput(fmt)
    whole = np.concatenate([one.feed(data), one.flush()])
    many = AudioInput(fmt)
    cut = np.concatenate([*(many.feed(f) for f in uneven(data, fmt.bytes_per_sample, most=301)), many.flush()])
    # The resampler's state carries over: frames cut anywhere give what one frame gives (to a few units of
    # rounding, -75 dB here); a resampler started afresh for each frame would be off by thousands.
    assert len(cut) == len(whole) and np.abs(cut.astype(int) - whole).max() <= 3


@pytest.mark.parametrize("encoding, rate", [("pcm16", 24000), ("pcmu", 8000), ("pcma", 8000)])
def test_resampled_to_16_khz_in_uneven_frames(encoding, rate):
    fmt = AudioFormat(encoding, rate)
    samples = sine(rate, 2.0)
    data = (samples.astype("<i2").tobytes() if encoding == "pcm16"
            else encode(samples, mulaw_encode if encoding == "pcmu" else alaw_encode))
    audio, pieces, fed = AudioInput(fmt), [], 0
    for frame in uneven(data, fmt.bytes_per_sample):
        pieces.append(audio.feed(frame))
        fed += len(frame) // fmt.bytes_per_sample
        made, due = sum(len(x) for x in pieces), fed * SAMPLE_RATE / rate
        # Never ahead of the input, never behind by more than the resampler's delay.
        assert due - HELD_BACK_S[rate] * SAMPLE_RATE <= made <= due + 1, (fed, made, due)
    out = np.concatenate(pieces)
    assert out.dtype == np.int16 and out.ndim == 1
    assert abs(peak_hz(out[: 16000 * 3 // 2], SAMPLE_RATE) - 440) < 1.5
    # Time-aligned (no shift) and at the right level: it is the same sine, sampled at 16 kHz.
    expected = sine(SAMPLE_RATE, 2.0)[: len(out)]
    middle = slice(800, len(out) - 800)
    tolerance = 40 if encoding == "pcm16" else 600  # G.711's own quantization at this level
    assert np.abs(out[middle].astype(int) - expected[middle]).max() <= tolerance
    tail = audio.flush()
    assert abs(len(out) + len(tail) - 2.0 * SAMPLE_RATE) <= 1
    # After a flush the stream goes on, with a fresh filter.
    again = np.concatenate([audio.feed(data[: len(data) // 2]), audio.flush()])
    assert abs(len(again) - SAMPLE_RATE) <= 1


def test_odd_pcm16_is_refused_and_the_stream_goes_on():
    audio = AudioInput(AudioFormat("pcm16", 24000))
    with pytest.raises(ProtocolError) as caught:
        audio.feed(b"\x00" * 479)
    assert caught.value.code == "invalid_audio" and "479" in caught.value.message
    assert len(audio.feed(b"\x00" * 4800)) > 0  # 100 ms; the resampler keeps some back


def test_frame_size_bound():
    audio = AudioInput(AudioFormat("pcm16", 16000))
    assert len(audio.feed(bytes(MAX_FRAME_BYTES))) == MAX_FRAME_BYTES // 2
    with pytest.raises(ProtocolError) as caught:
        audio.feed(bytes(MAX_FRAME_BYTES + 2))
    assert caught.value.code == "frame_too_large"


def test_formats_that_do_not_exist():
    for encoding, rate in [("pcm16", 44100), ("pcmu", 16000), ("opus", 48000)]:
        with pytest.raises(ValueError):
            AudioFormat(encoding, rate)
