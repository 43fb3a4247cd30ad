"""padded_log_mel: each engine's features of a window padded to 30 s, computed on the window alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serve.backends.base import SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, padded_log_mel
from serve.core.audio import decode
from tests import speech


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return decode(speech.long_clip(1.0).path)


def _faster_whisper():
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor()
    return fe, lambda w: fe(np.pad(w, (0, WINDOW_SAMPLES - len(w))))[..., :WINDOW_FRAMES]


def _openai():
    from whisper.audio import N_SAMPLES, log_mel_spectrogram

    def log_mel(a):
        return log_mel_spectrogram(torch.from_numpy(a), 80, padding=SAMPLE_RATE)

    return log_mel, lambda w: log_mel_spectrogram(torch.from_numpy(w), 80, padding=N_SAMPLES)[:, :WINDOW_FRAMES]


def _transformers():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()

    def log_mel(a):
        return fe(a, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np").input_features[0]

    return log_mel, lambda w: fe(w, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]


ENGINES = {"ctranslate2": _faster_whisper, "openai": _openai, "transformers": _transformers}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seconds", [0.05, 0.3, 4.0, 12.5, 28.9, 29.5, 30.0])
def test_same_features_as_the_padded_window(audio, engine, seconds):
    log_mel, whole = ENGINES[engine]()
    window = np.ascontiguousarray(audio[int(5 * SAMPLE_RATE):int((5 + seconds) * SAMPLE_RATE)])
    ours, theirs = np.asarray(padded_log_mel(log_mel, window)), np.asarray(whole(window))
    assert ours.shape == theirs.shape == (80, WINDOW_FRAMES)
    assert np.abs(ours - theirs).max() < 1e-5


def test_silence_alone():
    """No frame louder than silence: every frame is the floor, as in the padded window."""
    log_mel, whole = _faster_whisper()
    window = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    assert np.array_equal(padded_log_mel(log_mel, window), whole(window))
