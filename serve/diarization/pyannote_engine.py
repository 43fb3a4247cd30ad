"""pyannote.audio 4's speaker diarization pipeline, loaded from the model artifact's ``diarization/`` folder.

The folder is a pyannote pipeline as ``Pipeline.from_pretrained(<local dir>)``
reads it: ``config.yaml`` whose model paths are ``$model/segmentation``,
``$model/embedding`` and ``$model/plda`` (relative to the folder), beside those
sub-folders (``pytorch_model.bin`` each; ``xvec_transform.npz`` and ``plda.npz``).
``whisper-artifacts add-diarization`` checks and copies such a folder.

Offline: every path is local, so pyannote never asks the hub for a file, and
``HF_HUB_OFFLINE=1`` is set in case something would; pyannote's telemetry
(on unless told otherwise) is turned off before pyannote is imported
(``PYANNOTE_METRICS_ENABLED=false``).

The stream keeps the audio: pyannote's pipeline takes the whole waveform at
once (its segmentation slides over it, its clustering sees every window), so
a request holds 230 MB per hour of 16 kHz float32 until ``finish``. The fed
pieces are kept once, and moved one by one into the single tensor pyannote
runs on, so the peak is that tensor plus one piece.

Turns come from pyannote's *exclusive* diarization (one speaker at a time,
made for laying over a transcript); the regular one, with overlapping turns,
is not used.

torch and pyannote are imported in functions only: importing this module costs nothing.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .diarizer import SpeakerTurn
from .engine import DiarizationEngine, SpeakerCounts

SAMPLE_RATE = 16000
CONFIG = "config.yaml"
INSTALL = ("pip install pyannote.audio==4.0.7 (with a torchaudio that imports beside this torch; "
           "see README, diarization)")


def pyannote_unavailable(folder: Path) -> Optional[str]:
    """None when ``folder`` holds a pipeline and pyannote.audio imports here; else what to add or install (one line)."""
    if not (Path(folder) / CONFIG).is_file():
        return (f"no pyannote pipeline: {Path(folder) / CONFIG} is missing; add one to the model artifact "
                "with whisper-artifacts add-diarization")
    if importlib.util.find_spec("pyannote") is None or importlib.util.find_spec("pyannote.audio") is None:
        return f"the model artifact has a pyannote pipeline, but pyannote.audio is not installed: {INSTALL}"
    try:
        _import_pyannote()
    except Exception as exc:  # a broken install fails in many ways (torchaudio's extension, a version clash)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (f"the model artifact has a pyannote pipeline, but pyannote.audio does not import: "
                f"{type(exc).__name__}: {first}; {INSTALL}")
    return None


def _import_pyannote():
    """pyannote.audio's Pipeline, imported with telemetry off and the hub offline."""
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"  # pyannote reads it at each event; on by default
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        # torchcodec (pyannote's file decoder) may not load beside this torch; the stream hands over
        # waveforms, never files, so its warning says nothing about this use
        warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
        from pyannote.audio import Pipeline
    return Pipeline


def load_pipeline(folder: Path, device: str):
    """The pipeline of ``folder``, on ``device``, in eval mode."""
    import torch

    Pipeline = _import_pyannote()
    pipeline = Pipeline.from_pretrained(Path(folder))
    if pipeline is None:  # from_pretrained answers None, not an error, where it found no pipeline
        raise RuntimeError(f"pyannote found no pipeline in {folder}")
    pipeline.to(torch.device(device))
    return pipeline


class PyannoteEngine(DiarizationEngine):
    """pyannote's pipeline from the artifact's folder, loaded on the first stream; one request runs it at a time."""

    name = "pyannote"

    def __init__(self, folder: Path, device: str):
        self.folder = Path(folder)
        self.device = device
        self._pipeline = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        """pyannote's pipeline keeps state on itself during a call (its models, its hooks): one call at a time."""

    def pipeline(self):
        with self._load_lock:
            if self._pipeline is None:
                self._pipeline = load_pipeline(self.folder, self.device)
            return self._pipeline

    def stream(self, counts: SpeakerCounts) -> "PyannoteStream":
        return PyannoteStream(self.pipeline(), self._run_lock, counts)

    def describe(self) -> dict:
        return {"diarization": self.name, "diarization_model": str(self.folder)}


class PyannoteStream:
    """One request: the audio kept as fed, pyannote run on all of it at ``finish``. One feeder; ``finish`` once."""

    def __init__(self, pipeline, run_lock: threading.Lock, counts: SpeakerCounts):
        self._pipeline = pipeline
        self._run_lock = run_lock
        self._counts = counts
        self._pieces: list[np.ndarray] = []
        self._samples = 0

    def feed(self, samples: np.ndarray) -> None:
        if len(samples):
            # kept as a copy: the caller may reuse its buffer
            self._pieces.append(np.array(samples, dtype=np.float32, copy=True).reshape(-1))
            self._samples += len(self._pieces[-1])

    def finish(self) -> list[SpeakerTurn]:
        if not self._samples:
            return []
        import torch

        waveform = torch.empty((1, self._samples), dtype=torch.float32)
        at = 0
        self._pieces.reverse()
        while self._pieces:  # each piece freed once copied: the peak is the tensor plus one piece
            piece = self._pieces.pop()
            waveform[0, at:at + len(piece)] = torch.from_numpy(piece)
            at += len(piece)
        counts = self._counts
        with self._run_lock, torch.inference_mode():
            output = self._pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, num_speakers=counts.num,
                                    min_speakers=counts.low, max_speakers=counts.high)
        del waveform
        return turns(getattr(output, "exclusive_speaker_diarization", output))


def turns(annotation) -> list[SpeakerTurn]:
    """A pyannote Annotation as speaker turns in time order, speakers numbered 0, 1, ... by first appearance."""
    order: dict = {}
    out = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        speaker = order.setdefault(label, len(order))
        out.append(SpeakerTurn(float(segment.start), float(segment.end), speaker))
    return out
