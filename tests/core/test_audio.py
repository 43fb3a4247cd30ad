"""Decoding: every format users send, on disk as it arrives, ffmpeg's reason on failure, its warnings kept;
our side's failures never passing for a short input; nothing read but the body."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from serve.core import audio
from serve.errors import AudioDecodeError, CancelledError, PayloadTooLargeError, ServiceFaultError
from tests import speech
from tests.ffmpeg_switch import FfmpegSwitch, ffmpeg_children
from tests.tripwires import Tripwires, referencing_bodies

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


def test_readers_see_the_audio_while_it_is_decoded(tmp_path):
    """The cutter waits for samples as they arrive: transcription starts before decoding ends."""
    long_mp3 = speech.long_clip(3.0, fmt="mp3")  # decoded by ffmpeg (a 16 kHz WAV is copied at once)
    file = audio.AudioFile(tmp_path / "audio.pcm")
    seen = []
    reader = threading.Thread(target=lambda: seen.append(file.wait_for(10 * audio.SAMPLE_RATE)))
    reader.start()
    audio.decode_to_file(long_mp3.path, file)
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
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(CancelledError):
        decoded(long_clip.path, tmp_path, cancelled=cancelled)


def test_decode_helper_gives_the_whole_file():
    clip = speech.speak(speech.SENTENCES[2])
    assert len(audio.decode(clip.path)) / audio.SAMPLE_RATE == pytest.approx(speech.duration(clip.path), abs=0.05)


# --- our side failing: an error, never a transcript that passes for the whole input ----------------

HANG_GUARD_S = 120
"""Only for a decode that never ends (the bug): no bound on how fast anything is."""


def _decoding(source: Path, file: audio.AudioFile, **kwargs) -> tuple[threading.Thread, dict]:
    """``decode_to_file`` in a thread of its own; the dict gets its "audio" or its "error"."""
    outcome: dict = {}

    def run():
        try:
            outcome["audio"] = audio.decode_to_file(source, file, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - what the test asserts on
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _ended(thread: threading.Thread) -> bool:
    thread.join(HANG_GUARD_S)
    return not thread.is_alive()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV], ids=lambda s: s.name)
def test_a_decoder_killed_mid_decode_fails_the_request(minute_clip, tmp_path, sig):
    """ffmpeg killed (or crashed) once its first samples of a minute are out, 20 s of it given: a
    ServiceFaultError, not those seconds passed off as the input. SIGTERM is caught by ffmpeg, which then exits 255 saying "received signal 15"."""
    body = tmp_path / "body"
    os.mkfifo(body)  # ffmpeg reads what the test writes, and waits for the rest
    file = audio.AudioFile(tmp_path / "audio.pcm")
    thread, outcome = _decoding(body, file)
    data = minute_clip.path.read_bytes()
    with open(body, "wb") as writer:  # returns when ffmpeg has opened it
        writer.write(data[:len(data) // 3])
        writer.flush()
        assert file.wait_for(1, HANG_GUARD_S) > 0, "the first samples came out"
        [ffmpeg] = ffmpeg_children(os.getpid())
        ffmpeg.send_signal(sig)
    assert _ended(thread)
    error = outcome.get("error")
    assert isinstance(error, ServiceFaultError), outcome
    assert f"was killed (signal {int(sig)}, {sig.name}) after {file.seconds:.0f} s" in error.message
    assert "send it again" in error.message
    assert file.done and file.error is error, "readers (the cutter) see the fault"


@pytest.mark.parametrize(("mode", "needle"), [
    ("broken", "could not start (Exec format error)"),  # Popen raises
    ("unloadable", "could not start (exit 127: ffmpeg: error while loading shared libraries"),
    ("out-of-memory", "ran out of memory after 2 s of audio"),
])
def test_a_decoder_that_cannot_start_or_run_fails_the_request_at_once(tmp_path, monkeypatch, mode, needle):
    monkeypatch.setenv("PATH", FfmpegSwitch(tmp_path / "bin", mode).env()["PATH"])
    file = audio.AudioFile(tmp_path / "audio.pcm")
    clip = speech.speak(speech.SENTENCES[0], fmt="flac")  # a 16 kHz WAV would not need ffmpeg
    with pytest.raises(ServiceFaultError) as err:
        audio.decode_to_file(clip.path, file)
    assert needle in err.value.message and "send it again" in err.value.message
    assert file.done and file.error is err.value, "readers (the cutter) are released at once"


def test_a_scratch_disk_that_fails_is_our_fault(tmp_path):
    """The PCM file on a full disk (/dev/full: every write is ENOSPC, even as root)."""
    pcm = tmp_path / "audio.pcm"
    pcm.symlink_to("/dev/full")
    file = audio.AudioFile(pcm)
    with pytest.raises(ServiceFaultError, match="scratch disk \\(No space left on device\\)") as err:
        audio.decode_to_file(speech.speak(speech.SENTENCES[0]).path, file)
    assert file.done and file.error is err.value


def test_a_cancel_kills_the_decoder_at_once_even_while_it_waits_for_input(minute_clip, tmp_path):
    """ffmpeg has 1 s of audio and waits for more (less than one read of ours): a cancel kills it then,
    not at its next 10 s of output, which never comes."""
    body = tmp_path / "body"
    os.mkfifo(body)
    cancelled = threading.Event()
    thread, outcome = _decoding(body, audio.AudioFile(tmp_path / "audio.pcm"), cancelled=cancelled)
    data = minute_clip.path.read_bytes()
    with open(body, "wb") as writer:
        writer.write(data[:44 + audio.SAMPLE_RATE * 2])
        writer.flush()
        [ffmpeg] = ffmpeg_children(os.getpid())
        cancelled.set()
        stopped = _ended(thread)
        gone = not ffmpeg.is_running()
    assert stopped and gone, "the cancelled decoder kept waiting on its input"
    assert isinstance(outcome.get("error"), CancelledError), outcome


def test_a_damaged_input_that_stops_ffmpeg_midway_says_where(tmp_path):
    """The one non-zero exit after samples we could make ffmpeg give is the input's doing: ADTS AAC
    frames of random bytes ("Error reinitializing filters!", exit 1). What was decoded is kept, and a
    warning says the decoder stopped there."""
    adts = tmp_path / "whole.aac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(speech.speak(" ".join(speech.SENTENCES[:4]), "en-gb").path),
                    "-c:a", "aac", str(adts)], check=True)
    data = bytearray(adts.read_bytes())
    rng, at, frames = random.Random(1), 0, 0
    while at < len(data) - 7:  # keep each frame's header, fill 90% of the frames with noise
        length = ((data[at + 3] & 3) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
        assert data[at] == 0xFF and length >= 7, "an ADTS frame starts here"
        frames += 1
        if frames > 3 and rng.random() < 0.9:
            data[at + 9:at + length] = rng.randbytes(len(data[at + 9:at + length]))
        at += length
    body = tmp_path / "damaged.aac"
    body.write_bytes(data)
    result = decoded(body, tmp_path)
    assert 0 < result.seconds < 5
    assert result.warnings[0].startswith(f"the decoder stopped at {result.seconds:.1f} s on an error in the input")
    assert "the rest of the input was not transcribed" in result.warnings[0]


def test_the_decoders_messages_are_bounded(tmp_path, monkeypatch):
    """15 MB of complaints on ffmpeg's stderr: what is kept stays small, and the warnings say how many more."""
    monkeypatch.setenv("PATH", FfmpegSwitch(tmp_path / "bin", "chatty").env()["PATH"])
    body = tmp_path / "body"
    body.write_bytes(b"whatever: this ffmpeg reads nothing")
    tracemalloc.start()
    try:
        result = decoded(body, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.seconds == 2.0
    assert peak < 2_000_000, f"{peak} bytes held for the decoder's messages"
    assert result.warnings[0] == "mp3: a complaint about the input"
    assert result.warnings[-1].startswith("... and ") and int(result.warnings[-1].split()[2]) > 400_000


# --- ffmpeg reads the body and nothing else ---------------------------------------------------------

CASES = [(kind, where) for kind in referencing_bodies("speech.mp3", "http://127.0.0.1:9/speech.mp3")
         for where in (("beside", "absolute") if kind.endswith("-local") else ("url",))]
TELLING = {"hls": "playlist.m3u8", "ffconcat": "list.ffconcat"}
"""A name that makes ffmpeg's probe sure of the format: a body is one change of input handling away from it."""


@pytest.mark.parametrize("name", ["body", "telling"])
@pytest.mark.parametrize(("kind", "where"), CASES, ids=[f"{k}-{w}" for k, w in CASES])
def test_a_body_that_names_other_files_or_urls_is_refused_unread(tmp_path, kind, where, name):
    """Playlists, ffconcat lists, subfile and image2 pattern names, given to ffmpeg as a file path beside
    the files they name (or naming them by absolute path, or a loopback URL): refused, nothing opened or
    fetched, and nothing of what they name in the answer."""
    words = speech.SENTENCES[5]
    with Tripwires(tmp_path, speech.speak(words, fmt="mp3").path.read_bytes()) as wires:
        body = tmp_path / (TELLING[kind.split("-")[0]] if name == "telling" else "body")
        body.write_bytes(referencing_bodies("speech.mp3" if where == "beside" else wires.local, wires.url)[kind])
        with pytest.raises(AudioDecodeError) as err:
            decoded(body, tmp_path)
        assert wires.touched() == []
    assert "does not read" in err.value.message and words.split()[-1] not in err.value.message


def test_a_body_named_like_an_image_pattern_opens_nothing_else(tmp_path):
    """ffmpeg takes a path with %03d for an image sequence (speech001.png, ...): refused, nothing opened."""
    with Tripwires(tmp_path, speech.speak(speech.SENTENCES[5]).path.read_bytes()) as wires:
        body = tmp_path / "speech%03d.png"
        body.write_bytes(speech.speak(speech.SENTENCES[0], fmt="flac").path.read_bytes())  # for ffmpeg to read
        with pytest.raises(AudioDecodeError, match="image2 format, which this endpoint does not read"):
            decoded(body, tmp_path)
        assert wires.touched() == []


def test_a_corrupt_header_that_makes_ffmpeg_say_out_of_memory_is_the_inputs_fault(tmp_path):
    """ffmpeg answers a WAV header with absurd sizes by "Cannot allocate memory" while opening it: a 415,
    not a 503 telling the caller to send the same broken file again."""
    body = tmp_path / "corrupt.wav"
    body.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    with pytest.raises(AudioDecodeError, match="Cannot allocate memory"):
        decoded(body, tmp_path)
