"""Speech regions found as the audio streams: the same regions whatever the pieces, and a bounded buffer."""

from __future__ import annotations

import numpy as np
import pytest

from serve.diarization import regions
from serve.diarization.regions import SAMPLE_RATE, SpeechRegions
from tests import speech
from tests.conversations import conversation


def found(audio: np.ndarray, piece: int) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of every region, and the most audio the finder ever held."""
    finder = SpeechRegions()
    out, held = [], 0
    for i in range(0, len(audio), piece):
        out += [(r.start, r.end) for r in finder.feed(audio[i:i + piece])]
        held = max(held, len(finder._buffer) + finder._pending)
    out += [(r.start, r.end) for r in finder.finish()]
    return out, held


@pytest.fixture(scope="module")
def talk() -> np.ndarray:
    return speech.load_pcm(conversation(2, 75, seed=1).path)


def test_regions_do_not_depend_on_the_pieces(talk, monkeypatch):
    monkeypatch.setattr(regions, "BLOCK_S", 20.0)  # several blocks in a 75 s file
    whole, _ = found(talk, len(talk))
    streamed, held = found(talk, 320)  # 20 ms pieces, as a live stream sends them
    assert len(whole) >= 10
    assert streamed == whole or _close(streamed, whole)
    assert held <= (20.0 + regions.MAX_REGION_S) * SAMPLE_RATE + 320


def _close(a, b, slack=0.1 * SAMPLE_RATE) -> bool:
    """Region for region within 100 ms (the VAD's state at a block's edge differs a little)."""
    return len(a) == len(b) and all(abs(x[0] - y[0]) <= slack and abs(x[1] - y[1]) <= slack for x, y in zip(a, b))


def test_each_region_holds_its_own_samples(talk):
    finder = SpeechRegions()
    got = finder.feed(talk) + finder.finish()
    assert got and all(np.array_equal(r.samples, talk[r.start:r.end]) for r in got)
    assert all(b.start >= a.end for a, b in zip(got, got[1:]))


def test_silence_and_noise_have_no_regions():
    rng = np.random.default_rng(0)
    assert found(np.zeros(90 * SAMPLE_RATE, np.float32), SAMPLE_RATE)[0] == []
    assert found((rng.normal(size=20 * SAMPLE_RATE) * 1e-3).astype(np.float32), SAMPLE_RATE)[0] == []
