"""Spectral clustering of embeddings: the count found or honoured, and a matrix that never grows past a bound."""

from __future__ import annotations

import numpy as np
import pytest

from serve.diarization import clustering
from serve.diarization.clustering import cluster, speaker_count_range


def voices(sizes, seed=0, spread=0.35):
    """Unit vectors around one random centre per speaker, ``sizes[i]`` windows of speaker i, interleaved in time."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), 192))
    truth = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    rng.shuffle(truth)
    x = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True)
    x = x + spread * rng.normal(size=x.shape) / np.sqrt(192)
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth


def agree(labels, truth) -> bool:
    """The same partition, whatever the numbering."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("sizes", [(60,), (40, 50), (30, 40, 35), (30, 25, 40, 20)])
def test_the_count_is_found(sizes):
    x, truth = voices(sizes)
    assert agree(cluster(x), truth)


def test_num_speakers_is_honoured():
    x, _ = voices((40, 50))
    assert len(set(cluster(x, num_speakers=3).tolist())) == 3
    assert len(set(cluster(x, num_speakers=1).tolist())) == 1


def test_min_and_max_speakers_bound_the_count():
    x, _ = voices((30, 40, 35, 25))
    assert len(set(cluster(x, max_speakers=2).tolist())) == 2
    y, _ = voices((60,))
    assert len(set(cluster(y, min_speakers=2).tolist())) >= 2


def test_count_range():
    assert speaker_count_range(3, None, None) == (3, 3)
    assert speaker_count_range(None, 2, 4) == (2, 4)
    assert speaker_count_range(None, None, None) == (1, clustering.MAX_SPEAKERS)
    assert speaker_count_range(None, 5, 2) == (5, 5)  # the options refuse min > max; here the floor wins


def test_nothing_and_little():
    assert cluster(np.zeros((0, 192))).shape == (0,)
    x, _ = voices((2, 2))
    assert cluster(x).tolist() == [0, 0, 0, 0]  # under MIN_WINDOWS: too little speech to tell voices apart


def test_unusable_windows_only_join_clusters():
    x, truth = voices((40, 50))
    usable = np.ones(len(x), bool)
    usable[:10] = False
    x[:10] = np.roll(x[:10], 1, axis=1)  # nonsense the clustering must not be shaped by
    labels = cluster(x, usable=usable)
    assert len(set(labels[10:].tolist())) == 2 and agree(labels[10:], truth[10:])


def test_a_long_file_never_builds_an_n_by_n_matrix(monkeypatch):
    """Every matrix the clustering decomposes is at most MAX_CLUSTERED square, however many windows.

    The bound is lowered to 300 and the file is 6,000 windows, which is the
    same case as 1,500 and a 4-hour file's 19,000, at a fraction of the CPU.
    """
    monkeypatch.setattr(clustering, "MAX_CLUSTERED", 300)
    x, truth = voices((2500, 3500), spread=0.3)
    shapes = []
    eigh = np.linalg.eigh

    def spy(matrix):
        shapes.append(matrix.shape)
        return eigh(matrix)

    monkeypatch.setattr(clustering.np.linalg, "eigh", spy)
    labels = cluster(x)
    assert shapes and max(max(s) for s in shapes) <= clustering.MAX_CLUSTERED < len(x)
    assert agree(labels, truth)
