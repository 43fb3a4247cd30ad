"""Which windows are the same voice: spectral clustering of speaker embeddings, with a bounded matrix.

The method is 3D-Speaker's (and SpeechBrain's) for CAM++ embeddings: a cosine
affinity matrix, each row pruned to its nearest neighbours, the Laplacian's
eigenvectors clustered by scikit-learn's k-means, and the number of speakers,
when not given, read from the largest gap between the Laplacian's
eigenvalues. On our benchmark it found the right count where scikit-learn's
agglomerative clustering with a distance threshold did not (that threshold
sat between 0.4 and 0.45 for one file and nowhere for another), and where
merging clusters by their centroids' similarity could not either: two real
people's centroids (pyannote's sample, 0.77) were more alike than two
espeak voices' (0.82-0.90). A cluster too small to be a speaker joins the
nearest other.

An affinity matrix is N x N, so a 4-hour file's 19,000 windows would need
2.9 GB. At most ``MAX_CLUSTERED`` windows, spread evenly over the recording,
are clustered; every window is then given the nearest cluster's centroid.
Memory is ``MAX_CLUSTERED``² plus N x 192, linear in the audio's length.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

MAX_CLUSTERED = 1500
"""Windows clustered directly (25 minutes of speech at a window a second); the rest join the nearest centroid."""
MAX_SPEAKERS = 10
"""Speakers looked for when no count is given."""
MIN_WINDOWS = 6
"""Fewer windows than this (under about 5 s of speech) are one speaker, unless a count is given."""
SHARES = (0.02, 0.2)
"""Each row of the affinity keeps a window's nearest neighbours: 2 % of the windows (SpeechBrain's) and,
separately, 20 % (at most ``MAX_NEIGHBOURS``); of the two counts of speakers they give, the smaller wins.
Each alone split a voice in two on some file, never both on the same one: 2 % on short files, where a
window's nearest are those next to it in time, which share half its audio (a 75 s conversation of two
voices gave four); 20 % on a 6-minute one (three for two)."""
MAX_NEIGHBOURS = 30
MIN_NEIGHBOURS = 6
MIN_CLUSTER_SHARE = 0.02
"""A cluster with less than this share of the clustered windows (and under 3 of them) is noise, not a speaker."""


def speaker_count_range(num_speakers: Optional[int], min_speakers: Optional[int],
                        max_speakers: Optional[int]) -> tuple[int, int]:
    """(lowest, highest) number of speakers to look for; a given ``num_speakers`` fixes both."""
    if num_speakers:
        return num_speakers, num_speakers
    low = max(1, min_speakers or 1)
    return low, max(low, max_speakers or MAX_SPEAKERS)


def cluster(embeddings: np.ndarray, num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
            max_speakers: Optional[int] = None, usable: Optional[np.ndarray] = None) -> np.ndarray:
    """A speaker index (0, 1, ...) per row of unit-length ``embeddings``.

    ``usable`` marks the windows fit to shape the clusters (those of enough
    real speech); the others are only assigned to the nearest one.
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    low, high = speaker_count_range(num_speakers, min_speakers, max_speakers)
    candidates = np.flatnonzero(usable) if usable is not None and usable.any() else np.arange(n)
    if len(candidates) > MAX_CLUSTERED:
        candidates = candidates[np.linspace(0, len(candidates) - 1, MAX_CLUSTERED).round().astype(int)]
    subset = embeddings[candidates]
    high = min(high, len(subset))
    low = min(low, high)
    if high <= 1 or (len(subset) < MIN_WINDOWS and low == 1):
        return np.zeros(n, int)
    labels = _spectral(subset, low, high)
    if num_speakers is None:
        labels = _drop_small(subset, labels, low)
    centroids = _centroids(subset, labels)
    return np.argmax(embeddings @ centroids.T, axis=1)


def neighbours(n: int) -> tuple[int, ...]:
    """How many of ``n`` windows each window stays linked to in the affinity (itself included), per pruning."""
    return tuple(sorted({int(max(MIN_NEIGHBOURS, min(share * n, max(MAX_NEIGHBOURS, 0.02 * n))))
                         for share in SHARES}))


def _spectral(x: np.ndarray, low: int, high: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    similarity = x @ x.T
    best = None
    for kept in neighbours(len(x)):
        k, vectors = _count(similarity.copy(), kept, low, high)
        if best is None or k < best[0]:
            best = (k, vectors)
    k, vectors = best
    if k == 1:
        return np.zeros(len(x), int)
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors[:, :k])


def _count(affinity: np.ndarray, kept: int, low: int, high: int) -> tuple[int, np.ndarray]:
    """The number of speakers the Laplacian's eigengap shows, within [low, high], and its eigenvectors."""
    n = len(affinity)
    drop = n - kept
    if drop > 0:  # keep each row's nearest neighbours only
        np.put_along_axis(affinity, np.argpartition(affinity, drop, axis=1)[:, :drop], 0.0, axis=1)
    affinity = np.maximum(0.5 * (affinity + affinity.T), 0.0)
    np.fill_diagonal(affinity, 0.0)
    laplacian = np.diag(affinity.sum(axis=1)) - affinity
    values, vectors = np.linalg.eigh(laplacian)
    if low == high:
        return low, vectors
    gaps = np.diff(values[: max(high, MAX_SPEAKERS) + 1])  # the count the eigenvalues show, within the bounds
    return int(np.clip(np.argmax(gaps) + 1, low, high)), vectors


def _centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    centroids = np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)])
    return centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)


def _drop_small(x: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    """Clusters too small to be a speaker (a cough, a laugh) join the nearest of the others (``low`` stay)."""
    labels = np.unique(labels, return_inverse=True)[1]
    small = np.bincount(labels) < max(3, MIN_CLUSTER_SHARE * len(labels))
    if not small.any() or (~small).sum() < max(1, low):
        return labels
    keep = np.flatnonzero(~small)
    kept = np.isin(labels, keep)
    centroids = _centroids(x[kept], labels[kept])
    labels = np.where(small[labels], keep[np.argmax(x @ centroids.T, axis=1)], labels)
    return np.unique(labels, return_inverse=True)[1]
