"""The embedded diarization end to end, on real speech and on generated conversations, with DER bounds.

Measured on this project's 2-core CI box (bench/diarization.py has the
longer runs): sample.wav DER 0.102; 75-90 s conversations under 0.02. The
bounds leave room for another x86-64 CPU's arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from serve.diarization import Diarizer, SpeakerTurn
from serve.diarization import diarizer as diarizer_module
from serve.diarization.diarizer import STEP, turns, windows
from serve.diarization.embedding import BATCH, WINDOW, fill
from serve.diarization.regions import SAMPLE_RATE, Region
from tests import conversations, speech


def diarize(embedder, path, piece=SAMPLE_RATE, **counts) -> list[SpeakerTurn]:
    audio = speech.load_pcm(path)
    diarizer = Diarizer(embedder, **counts)
    for i in range(0, len(audio), piece):
        diarizer.feed(audio[i:i + piece])
    return diarizer.finish()


def test_windows_cover_a_region_to_its_end():
    assert windows(Region(100, np.zeros(WINDOW // 2, np.float32))) == [(100, 100 + WINDOW // 2)]
    spans = windows(Region(0, np.zeros(3 * WINDOW + 5, np.float32)))
    assert spans[0] == (0, WINDOW) and spans[-1] == (2 * WINDOW + 5, 3 * WINDOW + 5)
    assert all(b[0] - a[0] <= STEP for a, b in zip(spans, spans[1:]))


def test_turns_split_overlaps_at_the_middle_and_number_speakers_by_first_appearance():
    spans = np.array([(0, 24000), (12000, 36000), (24000, 48000), (64000, 80000)])
    out = turns(spans, np.array([5, 5, 2, 5]))
    assert out == [SpeakerTurn(0.0, 1.875, 0), SpeakerTurn(1.875, 3.0, 1), SpeakerTurn(4.0, 5.0, 0)]


def test_pyannote_sample(embedder):
    """Real speech: two speakers found, DER within 0.2 (measured 0.102), with no count given."""
    sample = conversations.pyannote_sample()
    score = conversations.score(sample, diarize(embedder, sample.path))
    assert score["found"] == 2
    assert score["der"] <= 0.2, score


@pytest.mark.parametrize("speakers, seconds, seed, piece", [(2, 75, 11, 4000), (3, 90, 12, SAMPLE_RATE)])
def test_generated_conversations(embedder, speakers, seconds, seed, piece):
    """One Diarizer over the whole stream (fed in 0.25 s or 1 s pieces): a voice keeps one label throughout,
    or the DER's best mapping of labels to voices would leave much confusion."""
    recording = conversations.conversation(speakers, seconds, seed=seed)
    score = conversations.score(recording, diarize(embedder, recording.path, piece=piece))
    assert score["found"] == speakers
    assert score["der"] <= 0.1, score


def test_windows_wait_for_a_whole_batch_across_regions(monkeypatch):
    """Short turns' regions hold one to four windows each: embedded together a batch at a time, in stream order."""
    recording = conversations.conversation(3, 60, seed=21)
    sizes = []

    class Spectra:  # each window's own spectrum: the same vector however windows are batched, on any CPU
        def embed(self, windows):
            sizes.append(len(windows))
            x = np.stack([np.abs(np.fft.rfft(fill(w), n=382)) for w in windows])
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)  # digital silence: 0

    batched = diarize(Spectra(), recording.path)
    assert len(sizes) >= 2 and all(n >= BATCH for n in sizes[:-1]) and sizes[-1] > 0, sizes
    calls = len(sizes)
    monkeypatch.setattr(diarizer_module, "BATCH", 1)  # each region as soon as it ends: the same turns
    sizes.clear()
    assert diarize(Spectra(), recording.path) == batched
    assert len(sizes) > 3 * calls and min(sizes) < 4, (calls, sizes)  # regions came one at a time


def test_one_speaker_gets_one_label(embedder):
    assert {t.speaker for t in diarize(embedder, speech.long_clip(1.0, "en-gb+f4").path)} == {0}


def test_silence_gets_no_speakers(embedder):
    diarizer = Diarizer(embedder)
    diarizer.feed(np.zeros(70 * SAMPLE_RATE, np.float32))
    assert diarizer.finish() == []


def test_speaker_counts_are_honoured(embedder):
    recording = conversations.conversation(2, 40, seed=13)
    assert len({t.speaker for t in diarize(embedder, recording.path, num_speakers=3)}) == 3
    assert len({t.speaker for t in diarize(embedder, recording.path, max_speakers=1)}) == 1
    assert len({t.speaker for t in diarize(embedder, recording.path, min_speakers=3)}) >= 3
