"""The numpy filterbank is Kaldi's: checked window by window against kaldi-native-fbank (k2-fsa's C++ port)."""

from __future__ import annotations

import numpy as np
import pytest

from serve.diarization.embedding import WINDOW
from serve.diarization.features import fbank, frames
from tests import speech


def kaldi(samples: np.ndarray) -> np.ndarray:
    """One window's features from kaldi-native-fbank, CAM++'s options: 80 bins, no dither, the window's mean removed."""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = 80
    computer = knf.OnlineFbank(options)
    computer.accept_waveform(16000, samples * 32768.0)
    computer.input_finished()
    out = np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])
    return out - out.mean(axis=0)


def test_a_batch_of_speech_and_noise_gets_kaldis_features_window_by_window():
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    windows = [audio[i:i + WINDOW] for i in range(0, 4 * WINDOW, WINDOW // 2)][:6]
    windows.append(np.random.default_rng(0).normal(size=WINDOW).astype(np.float32) * 0.1)
    windows.append(np.zeros(WINDOW, np.float32))  # digital silence: every bin at the log floor
    features = fbank(np.stack(windows))
    assert features.shape == (len(windows), 148, 80) and features.dtype == np.float32  # Kaldi's snip_edges frames
    for mine, window in zip(features, windows):
        assert np.abs(mine - kaldi(window)).max() < 5e-3  # float32 rounding of log powers up to about 30
    assert np.allclose(features.mean(axis=1), 0, atol=1e-4)


@pytest.mark.parametrize("samples, count", [(399, 0), (400, 1), (559, 1), (560, 2), (WINDOW, 148)])
def test_frames_are_whole_25_ms_frames_every_10_ms(samples, count):
    assert frames(samples) == count
    if count:
        assert fbank(np.zeros((1, samples), np.float32)).shape == (1, count, 80)
