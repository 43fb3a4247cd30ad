"""Decoding: every format users send, on disk as it arrives, ffmpeg's reason on failure, its warnings kept."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from serve.core import audio
from serve.errors import AudioDecodeError, CancelledError, PayloadTooLargeError
from tests import speech

FORMATS = ["wav", "mp3", "ogg", "flac", "m4a", "webm", "mp4"]


def decoded(path: Path, tmp_path: Path, **limits) -> audio.AudioFile:
    return audio.decode_to_file(path, audio.AudioFile(tmp_path / "audio.pcm"), **limits)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decodes_every_format_to_16k_mono(fmt, tmp_path):
    clip = speech.speak(speech.SENTENCES[0], "en-us", fmt)
    result = decoded(clip.path, tmp_path)
    samples = result.read(0, result.samples)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert result.seconds == pytest.approx(3.2, abs=0.15) and result.done and result.error is None
    assert 0.01 < np.abs(samples).max() <= 1.0
    assert result.warnings == [], "a whole file gets no warning"
    assert result.path.stat().st_size == result.samples * 2  # 16-bit PCM on disk, not in memory


def test_readers_see_the_audio_while_it_is_decoded(long_clip, tmp_path):
    """The cutter waits for samples as they arrive: transcription starts before decoding ends."""
    file = audio.AudioFile(tmp_path / "audio.pcm")
    seen = []
    reader = threading.Thread(target=lambda: seen.append(file.wait_for(10 * audio.SAMPLE_RATE)))
    reader.start()
    audio.decode_to_file(long_clip.path, file)
    reader.join(10)
    assert seen and 10 * audio.SAMPLE_RATE <= seen[0] < file.samples
    assert file.read(0, 10).shape == (10,) and len(file.read(file.samples - 5, file.samples + 100)) == 5


def test_garbage_is_refused_with_ffmpegs_reason(tmp_path):
    bad = tmp_path / "not-audio.bin"
    bad.write_bytes(b"this is certainly not audio " * 100)
    with pytest.raises(AudioDecodeError) as err:
        decoded(bad, tmp_path)
    assert "could not decode" in err.value.message and "Invalid data found" in err.value.message
    assert str(tmp_path) not in err.value.message, "temp paths mean nothing to the caller"


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError):
        decoded(empty, tmp_path)


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav"])
def test_a_cut_file_decodes_what_is_there_and_says_so(fmt, tmp_path):
    clip = speech.speak(" ".join(speech.SENTENCES[:4]), "en-gb", fmt)
    data = clip.path.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    result = decoded(cut, tmp_path)
    whole = speech.duration(clip.path)
    assert 0.2 * whole < result.seconds < 0.8 * whole
    assert result.warnings, "a cut file must not pass for a whole one"
    assert all(str(tmp_path) not in w for w in result.warnings)


def _wav_header(rate: int, data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def test_a_tiny_body_declaring_1_hz_cannot_buy_hours_of_audio(tmp_path):
    """2 kB at 1 Hz would resample to 1,000 s: refused from the header, before any work."""
    body = tmp_path / "1hz.wav"
    body.write_bytes(_wav_header(1, 2000) + bytes(2000))
    with pytest.raises(AudioDecodeError, match="1 Hz"):
        decoded(body, tmp_path)


def test_audio_longer_than_the_limit_is_refused(long_clip, tmp_path):
    with pytest.raises(PayloadTooLargeError, match="WHISPER_MAX_AUDIO_SECONDS"):
        decoded(long_clip.path, tmp_path, max_seconds=60)


def test_a_cancelled_decoding_stops(long_clip, tmp_path):
    with pytest.raises(CancelledError):
        decoded(long_clip.path, tmp_path, cancelled=lambda: True)


def test_decode_helper_gives_the_whole_file():
    clip = speech.speak(speech.SENTENCES[2])
    assert len(audio.decode(clip.path)) / audio.SAMPLE_RATE == pytest.approx(speech.duration(clip.path), abs=0.05)
