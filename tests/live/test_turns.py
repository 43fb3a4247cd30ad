"""Server VAD over a stream: turns start on speech and stop after the silence, whatever the frame size."""

import numpy as np
import pytest

from serve.live.turns import CHUNK, SpeechProbability, TurnDetector
from tests import speech

RATE = 16000


def _stream(detector: TurnDetector, samples: np.ndarray, frame: int):
    events = []
    for i in range(0, len(samples), frame):
        events += detector.feed(samples[i:i + frame])
    return events


@pytest.fixture(scope="module")
def sentence_in_silence(corpus) -> tuple[np.ndarray, int, int]:
    clip = speech.load_pcm(corpus[0].path)
    pcm = (np.clip(clip, -1, 1) * 32767).astype(np.int16) if clip.dtype != np.int16 else clip
    silence = np.zeros(2 * RATE, np.int16)
    return np.concatenate([silence, pcm, silence]), len(silence), len(silence) + len(pcm)


@pytest.mark.parametrize("frame_ms", [20, 100, 1000])
def test_one_sentence_between_silences_is_one_turn(sentence_in_silence, frame_ms):
    audio, start, end = sentence_in_silence
    events = _stream(TurnDetector(0.5, 500), audio, frame_ms * RATE // 1000)
    assert [e.kind for e in events] == ["started", "stopped"]
    started, stopped = events
    assert start - RATE // 2 <= started.sample <= start + RATE  # espeak's clip starts with a little silence
    assert end - RATE <= stopped.sample <= end + RATE // 4


def test_silence_and_a_click_start_no_turn():
    audio = np.zeros(10 * RATE, np.int16)
    audio[5 * RATE:5 * RATE + 40] = 20000  # 2.5 ms: shorter than a turn's least speech
    assert _stream(TurnDetector(), audio, 320) == []


def test_probabilities_do_not_depend_on_how_the_stream_is_cut(sentence_in_silence):
    audio = sentence_in_silence[0]
    whole = SpeechProbability().feed(audio)
    parts, vad = [], SpeechProbability()
    for cut in np.split(audio, [333, 5000, 5001, 40000]):
        parts.extend(vad.feed(cut))
    assert len(whole) == len(audio) // CHUNK
    np.testing.assert_allclose(whole, parts, atol=1e-5)


def test_the_quietest_moment_is_found_within_the_range_asked(sentence_in_silence):
    audio, start, end = sentence_in_silence
    detector = TurnDetector()
    detector.feed(audio)
    cut = detector.quietest(end - RATE // 2, len(audio))
    assert end - RATE // 2 <= cut < len(audio)
    assert detector.probabilities[cut // CHUNK] < 0.5


def test_a_speaker_who_stops_is_pausing_before_the_turn_stops_and_speech_ends_the_pause(sentence_in_silence):
    """``pausing``: half the turn's silence heard after speech (the session holds its interim passes then)."""
    audio, start, end = sentence_in_silence
    detector = TurnDetector(0.5, 500)
    seen = []  # (pausing, the events of that step), a VAD step at a time
    for i in range(0, end + RATE, CHUNK):
        seen.append((detector.pausing, [e.kind for e in detector.feed(audio[i:i + CHUNK])]))
    stop = next(i for i, (_, kinds) in enumerate(seen) if "stopped" in kinds)
    paused = [i for i, (pausing, _) in enumerate(seen) if pausing]
    assert paused and paused[-1] == stop and stop - paused[0] >= detector.silence_steps // 2 - 1
    assert not detector.pausing, "the turn has stopped: no longer speaking"
    for i in range(start, end, CHUNK):  # speech again: a new turn, not a pause
        if "started" in [e.kind for e in detector.feed(audio[i:i + CHUNK])]:
            break
    assert detector.speaking and not detector.pausing
