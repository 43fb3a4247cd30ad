"""WAVs already in the engines' format pass through without ffmpeg, with every guarantee of the ffmpeg path."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from serve.core import audio, wav
from serve.errors import AudioDecodeError, CancelledError, PayloadTooLargeError
from tests import speech


def _header(rate=16000, channels=1, bits=16, tag=1, data_bytes=None, extra_chunk=b"") -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if tag == wav.EXTENSIBLE:
        fmt += struct.pack("<HHI", 22, bits, 4) + wav.PCM_GUID
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + extra_chunk + b"fmt " + struct.pack("<I", len(fmt))
            + fmt + b"data" + struct.pack("<I", size))


def _pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


@pytest.fixture
def no_ffmpeg(monkeypatch):
    """ffmpeg must not start: the pass-through is the point."""
    def refuse(source):
        raise AssertionError(f"ffmpeg started for {source}")

    monkeypatch.setattr(audio, "_start", refuse)


@pytest.fixture
def ffmpeg_starts(monkeypatch) -> list:
    started: list = []
    real = audio._start
    monkeypatch.setattr(audio, "_start", lambda source: started.append(source) or real(source))
    return started


def decoded(path: Path, tmp_path: Path, **kwargs) -> audio.AudioFile:
    return audio.decode_to_file(path, audio.AudioFile(tmp_path / "audio.pcm"), **kwargs)


def test_a_16k_mono_pcm_wav_gives_exactly_ffmpegs_samples_without_ffmpeg(corpus, tmp_path, monkeypatch):
    clip = corpus[3].path
    assert wav.read_header(clip).passes_through(16000), "the corpus is 16 kHz mono 16-bit WAV"
    by_ffmpeg = speech.load_pcm(clip)
    monkeypatch.setattr(audio, "_start", lambda source: pytest.fail("ffmpeg started"))
    result = decoded(clip, tmp_path)
    assert np.array_equal(result.read(0, result.samples), by_ffmpeg)
    assert result.warnings == [] and result.done and result.error is None


@pytest.mark.parametrize("fmt", [dict(rate=44100), dict(channels=2), dict(bits=8), dict(tag=3, bits=32)],
                         ids=["44.1 kHz", "stereo", "8-bit", "float"])
def test_any_other_wav_goes_to_ffmpeg(fmt, tmp_path, ffmpeg_starts):
    rate, channels, bits = fmt.get("rate", 16000), fmt.get("channels", 1), fmt.get("bits", 16)
    frames = rate  # one second
    if fmt.get("tag") == 3:
        data = np.zeros(frames * channels, "<f4").tobytes()
    else:
        data = bytes(frames * channels * bits // 8)
    body = tmp_path / "other.wav"
    body.write_bytes(_header(data_bytes=len(data), **fmt) + data)
    result = decoded(body, tmp_path)
    assert ffmpeg_starts == [body] and result.seconds == pytest.approx(1.0, abs=0.01)


def test_an_extensible_pcm_wav_passes_through(tmp_path, no_ffmpeg):
    data = _pcm(2.0)
    body = tmp_path / "extensible.wav"
    body.write_bytes(_header(tag=wav.EXTENSIBLE, data_bytes=len(data), extra_chunk=b"LIST\x04\x00\x00\x00INFO") + data)
    result = decoded(body, tmp_path)
    assert result.path.read_bytes() == data and result.seconds == 2.0


def test_a_cut_wav_keeps_what_is_there_and_says_so(tmp_path, no_ffmpeg):
    data = _pcm(10.0)
    body = tmp_path / "cut.wav"
    body.write_bytes(_header(data_bytes=len(data)) + data[: len(data) // 2])
    result = decoded(body, tmp_path)
    assert result.seconds == 5.0
    assert result.warnings == ["the input ends early: it declares 10.0 s and 5.0 s could be decoded "
                               "(a cut or incomplete file?)"]


def test_a_streamed_wav_of_unknown_size_is_read_to_its_end(tmp_path, no_ffmpeg):
    data = _pcm(3.0) + b"\x01"  # an odd last byte is no sample
    body = tmp_path / "streamed.wav"
    body.write_bytes(_header(data_bytes=None) + data)
    result = decoded(body, tmp_path)
    assert result.seconds == 3.0 and result.warnings == []


def test_chunks_after_the_data_are_not_samples(tmp_path, no_ffmpeg):
    data = _pcm(1.0)
    body = tmp_path / "trailer.wav"
    body.write_bytes(_header(data_bytes=len(data)) + data + b"LIST\x10\x00\x00\x00" + bytes(16))
    assert decoded(body, tmp_path).path.read_bytes() == data


def test_the_length_limit_is_checked_from_the_header_before_any_sample(tmp_path, no_ffmpeg):
    data = _pcm(1.0)
    body = tmp_path / "long.wav"
    body.write_bytes(_header(data_bytes=3600 * 32000) + data)  # declares an hour, holds a second
    file = audio.AudioFile(tmp_path / "audio.pcm")
    with pytest.raises(PayloadTooLargeError, match="WHISPER_MAX_AUDIO_SECONDS"):
        audio.decode_to_file(body, file, max_seconds=60)
    assert file.samples == 0 and file.done


def test_an_empty_data_chunk_is_refused(tmp_path, no_ffmpeg):
    body = tmp_path / "empty.wav"
    body.write_bytes(_header(data_bytes=0))
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        decoded(body, tmp_path)


def test_a_cancel_stops_the_copy(tmp_path, no_ffmpeg):
    body = tmp_path / "cancelled.wav"
    data = _pcm(60.0)
    body.write_bytes(_header(data_bytes=len(data)) + data)
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(CancelledError):
        decoded(body, tmp_path, cancelled=cancelled)


def test_a_pipe_is_never_read_by_the_header_reader(tmp_path):
    """A FIFO's first bytes read here would be gone for ffmpeg."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert wav.read_header(fifo) is None  # returns at once, opening nothing (opening would block)
