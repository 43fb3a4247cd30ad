"""The one interface every engine implements.

A backend is loaded once per worker process (``load``) and then transcribes
16 kHz mono float32 audio (``transcribe``). It declares, for every field of
``TranscribeOptions``, either that it honours it or why it cannot; ``check``
turns a set option it cannot honour into an error naming option and backend.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from ..errors import UnsupportedOptionError
from ..settings import Settings
from ..transcription import TranscribeOptions, Transcription

log = logging.getLogger(__name__)

SUPPORTED = None
"""Value in ``Backend.options`` for an option the backend honours."""

OFF_VALUES = {"vad_filter": False, "batch_size": 1, "condition_on_previous_text": False}
"""An option a backend rejects may still be set to the value that describes
what the backend does anyway (no VAD, one chunk at a time, no conditioning)."""


@dataclass(frozen=True)
class Device:
    """Where a backend runs and at which precision."""

    kind: str  # "cpu" or "cuda"
    index: int = 0
    compute_type: str = "float32"
    cpu_threads: int = 0

    @property
    def torch_device(self) -> str:
        return "cuda:%d" % self.index if self.kind == "cuda" else "cpu"


class Backend(abc.ABC):
    name: ClassVar[str]
    """The WHISPER_BACKEND value that selects this backend."""

    options: ClassVar[Mapping[str, str | None]]
    """Every TranscribeOptions field -> SUPPORTED, or the reason it is rejected."""

    def __init__(self, model_path: Path, settings: Settings, device: Device, model_name: str):
        self.model_path = model_path
        self.settings = settings
        self.device = device
        self.model_name = model_name
        self.english_only = False

    @classmethod
    @abc.abstractmethod
    def load(cls, model_path: Path, settings: Settings, device: Device, model_name: str) -> "Backend":
        """Load the model at ``model_path`` (a file or directory in this backend's layout)."""

    @abc.abstractmethod
    def _transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        """Transcribe with options already checked and merged over defaults."""

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions = TranscribeOptions()) -> Transcription:
        """Transcribe 16 kHz mono float32 ``audio``.

        ``options`` are the caller's; unset ones come from the settings'
        defaults. Raises ``UnsupportedOptionError`` for an option this
        backend or this model cannot honour.
        """
        merged = options.merged_over(self.settings.defaults)
        self.check(merged)
        return self._transcribe(audio, merged)

    def check(self, options: TranscribeOptions) -> None:
        for name, value in options.set_options().items():
            reason = self.options[name]
            if reason is not SUPPORTED and (name not in OFF_VALUES or value != OFF_VALUES[name]):
                raise UnsupportedOptionError(f"option {name}={_show(value)} is not supported by the {self.name} backend: {reason}")
        if self.english_only:
            if options.language not in (None, "en"):
                raise UnsupportedOptionError(
                    f"language={options.language} is not possible with the English-only model "
                    f"{self.model_name} ({self.name} backend); use a multilingual model"
                )
            if options.task == "translate":
                raise UnsupportedOptionError(
                    f"task=translate needs a multilingual model; {self.model_name} ({self.name} backend) is English-only"
                )

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "device": self.device.torch_device,
                "compute_type": self.device.compute_type}


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
