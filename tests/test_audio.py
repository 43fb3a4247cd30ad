"""Decoding: every format users send, bounded windows, and ffmpeg's reason on failure."""

from __future__ import annotations

import numpy as np
import pytest

from serve import audio
from serve.errors import AudioDecodeError
from tests import speech

FORMATS = ["wav", "mp3", "ogg", "flac", "m4a", "webm", "mp4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_decodes_every_format_to_16k_mono_float32(fmt):
    clip = speech.speak(speech.SENTENCES[0], "en-us", fmt)
    samples = audio.decode(clip.path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / audio.SAMPLE_RATE == pytest.approx(3.2, abs=0.15)
    assert 0.01 < np.abs(samples).max() <= 1.0


def test_windows_cover_the_file_exactly_and_are_bounded(long_clip):
    whole = audio.decode(long_clip.path)
    windows = list(audio.iter_windows(long_clip.path, 60))
    assert len(windows) >= 3
    assert all(len(w.audio) <= 61 * audio.SAMPLE_RATE for w in windows)
    offset = 0.0
    for w in windows:
        assert w.offset == pytest.approx(offset)
        offset += len(w.audio) / audio.SAMPLE_RATE
    np.testing.assert_array_equal(np.concatenate([w.audio for w in windows]), whole)


def test_window_cut_falls_in_silence():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.5, 0.5, 90 * audio.SAMPLE_RATE).astype(np.float32)
    quiet_at = 75 * audio.SAMPLE_RATE
    noise[quiet_at: quiet_at + audio.SAMPLE_RATE] = 0.0
    cut = audio.quietest_cut(noise)
    assert quiet_at <= cut <= quiet_at + audio.SAMPLE_RATE


def test_garbage_is_refused_with_ffmpegs_reason(tmp_path):
    bad = tmp_path / "not-audio.bin"
    bad.write_bytes(b"this is certainly not audio " * 100)
    with pytest.raises(AudioDecodeError) as err:
        audio.decode(bad)
    assert "could not decode" in err.value.message
    assert str(tmp_path) not in err.value.message, "temp paths mean nothing to the caller"
    assert len(err.value.message) > len("could not decode the audio: ")


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError):
        audio.decode(empty)


def test_truncated_mp3_decodes_what_is_there(tmp_path):
    clip = speech.speak(speech.SENTENCES[1], "en-gb", "mp3")
    data = clip.path.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    samples = audio.decode(cut)
    assert 1.0 < len(samples) / audio.SAMPLE_RATE < 3.5
