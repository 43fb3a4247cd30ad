"""Cutting a request's audio into windows: bounded, complete, timed back to the request's audio."""

from __future__ import annotations

import numpy as np
import pytest

from serve.core.audio import SAMPLE_RATE, AudioFile, decode_to_file
from serve.core.options import BUILT_IN, Capabilities, TranscribeOptions, resolve
from serve.core.segments import _HAIR, MAX_GAP_S, VAD_BLOCK_S, Piece, Window, join, pad, quietest, windows
from tests import speech

CAPABILITIES = Capabilities("test", "tiny.en", True, {n: None for n in TranscribeOptions.names()}, {})


def options(**values):
    return resolve(TranscribeOptions(**values), BUILT_IN, CAPABILITIES)


@pytest.fixture(scope="module")
def long_audio(long_clip, tmp_path_factory) -> AudioFile:
    return decode_to_file(long_clip.path, AudioFile(tmp_path_factory.mktemp("pcm") / "audio.pcm"))


def _covered(ws: list[Window]) -> list[tuple[int, int]]:
    return [(p.start, p.end) for w in ws for p in w.pieces]


def test_vad_windows_are_bounded_and_cover_the_speech(long_clip, long_audio):
    ws = list(windows(long_audio, options()))
    assert all(w.length <= 30 * SAMPLE_RATE for w in ws)
    spans = _covered(ws)
    assert spans == sorted(spans) and all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:])), "no audio is decoded twice"
    covered = np.zeros(long_audio.samples, dtype=bool)
    for a, b in spans:
        covered[a:b] = True
    for start, end in speech.speech_stretches(long_clip.path):
        part = covered[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        assert part.mean() > 0.95, f"speech at {start}-{end} s is left out of the windows"


def test_without_vad_windows_are_consecutive_and_cut_in_pauses(long_audio):
    ws = list(windows(long_audio, options(vad_filter=False)))
    spans = _covered(ws)
    assert spans[0][0] == 0 and spans[-1][1] == long_audio.samples
    assert all(b == a for (_, b), (a, _) in zip(spans, spans[1:])), "every sample, once"
    assert all(w.length <= 30 * SAMPLE_RATE for w in ws)
    samples = long_audio.read(0, long_audio.samples)
    for _, cut in spans[:-1]:
        assert np.abs(samples[cut - 160:cut + 160]).max() < 0.05, "a cut fell inside a word"


def test_chunk_length_bounds_the_windows(long_audio):
    assert all(w.length <= 10 * SAMPLE_RATE for w in windows(long_audio, options(chunk_length_s=10)))


def test_sequential_requests_get_the_same_windows(long_audio):
    """condition_on_previous_text changes how windows are decoded (one at a time, with the text before
    as prompt), not how they are cut: Whisper's own loop reads 30 s at a time too."""
    for vad in (True, False):
        assert list(windows(long_audio, options(condition_on_previous_text=True, vad_filter=vad))) == \
            list(windows(long_audio, options(vad_filter=vad)))


def test_silence_gives_no_window(tmp_path):
    import wave

    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes(bytes(2 * 60 * SAMPLE_RATE))
    audio = decode_to_file(path, AudioFile(tmp_path / "audio.pcm"))
    assert list(windows(audio, options())) == []


def test_a_window_maps_its_times_back_and_keeps_its_rest():
    second = SAMPLE_RATE
    w = join([(10 * second, 12 * second), (20 * second, 25 * second)], MAX_GAP_S)  # a 8 s pause shrinks to 1 s
    assert w.pieces == (Piece(10 * second, 12 * second, 0), Piece(20 * second, 25 * second, 3 * second))
    assert w.length == 8 * second
    assert w.source_time(1.0) == 11.0 and w.source_time(4.0) == 21.0
    assert w.source_time(2.5) == 12.0, "a time in the pause maps to the end of the speech before it"
    rest = w.after(3.5)
    assert rest.pieces == (Piece(int(20.5 * second), 25 * second, 0),)
    assert w.after(7.8) is None, "less than half a second left: nothing to decode again"


def test_quietest_finds_the_pause():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.5, 0.5, 30 * SAMPLE_RATE).astype(np.float32)
    quiet_at = 27 * SAMPLE_RATE
    noise[quiet_at: quiet_at + SAMPLE_RATE // 5] = 0.0
    cut = quietest(noise, 5.0)
    assert quiet_at <= cut <= quiet_at + SAMPLE_RATE // 5


@pytest.mark.parametrize("chunk_length_s", [30.0, 12.5, 8.0])
def test_speech_found_unpadded_then_padded_is_faster_whispers_own(long_audio, chunk_length_s):
    """The VAD runs once, unpadded (a diarized request's embedder reads those regions), and the transcription's
    regions are padded from them: exactly what faster-whisper's padded call gives, both ways of padding a gap
    included, and the length limit that counts the padding in."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    speech_only = long_audio.read(0, min(long_audio.samples, int(VAD_BLOCK_S * SAMPLE_RATE) - 3 * SAMPLE_RATE))
    pause = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)  # its own pauses are all shorter than two paddings
    third = len(speech_only) // 3
    block = np.concatenate([speech_only[:third], pause, speech_only[third:2 * third], pause, speech_only[2 * third:]])
    padded = [(r["start"], r["end"]) for r in get_speech_timestamps(
        block, VadOptions(max_speech_duration_s=chunk_length_s, min_silence_duration_ms=160))]
    raw = [(r["start"], r["end"]) for r in get_speech_timestamps(
        block, VadOptions(max_speech_duration_s=chunk_length_s - 0.8 + _HAIR, min_silence_duration_ms=160,
                          speech_pad_ms=0))]
    gaps = [b - a for (_, a), (b, _) in zip(raw, raw[1:])]
    assert min(gaps) < 2 * 6400 < max(gaps), gaps  # shared and whole paddings both happen
    assert pad(raw, 6400, 0, len(block)) == padded


def test_the_speech_found_is_each_region_the_transcription_gets_unpadded(long_audio):
    found: list[tuple[int, int]] = []
    ws = list(windows(long_audio, options(chunk_length_s=8.0), speech=found.extend))
    padded = [(p.start, p.end) for w in ws for p in w.pieces]
    assert len(found) == len(padded) > 10
    assert all(a <= c < d <= b for (a, b), (c, d) in zip(padded, found))
    assert found == sorted(found)
