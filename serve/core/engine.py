"""The engine interface the core calls, and nothing more: one batched decode of short windows.

The core owns this interface; ``serve/backends`` implement it (one file per
engine) and nothing in ``serve/core`` names a backend. An engine knows its
model, device and precision; nothing of HTTP, settings or requests.

``decode(windows, options, temperature)`` is one engine call on up to
``WHISPER_MAX_BATCH`` windows of at most 30 s each, all decoded with the same
options; an engine that can (``prompt_per_window``) also takes each window's
own prompt, so requests whose prompts differ (live sessions, each prompted
with its own previous words) still share engine calls. Everything else (cutting, batching, temperature fallback, the
sequential lane's previous-text prompt, packing, delivery) is the scheduler's.

Every engine declares, per option, ``None`` (honoured) or why it is not
(``support``); ``serve.core.options.resolve`` turns that into a 400 naming the
option and the engine.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional, Sequence

import numpy as np

from .options import Capabilities, DecodeOptions
from .results import Segment

OFF_VALUES = {"vad_filter": False, "condition_on_previous_text": False}
"""An option an engine rejects may still be set to the value that describes what it does anyway."""


@dataclass(frozen=True)
class Device:
    """Where an engine runs and at which precision."""

    kind: str  # "cpu" or "cuda"
    index: int = 0
    compute_type: str = "float32"
    cpu_threads: int = 0

    @property
    def torch_device(self) -> str:
        return "cuda:%d" % self.index if self.kind == "cuda" else "cpu"


@dataclass(frozen=True)
class Decoded:
    """One window's decoding: segments timed from the window's start, and the window's scores."""

    segments: tuple[Segment, ...]
    language: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    resume_at: Optional[float] = None
    """Where the decoder stopped without finishing (an unclosed last segment): the
    text from here on was not produced and must be decoded again. None: done."""
    segment_logprobs: Optional[tuple[tuple[float, int], ...]] = None
    """Per segment (same order): the sum of its tokens' log probabilities and their
    number; given when ``decode`` is asked for ``scores`` (packed windows, whose
    requests each get scores from their own tokens)."""


class Engine(abc.ABC):
    """A loaded Whisper model that decodes batches of windows."""

    name: ClassVar[str]
    """The WHISPER_BACKEND value that selects this engine."""

    support: ClassVar[Mapping[str, Optional[str]]]
    """Every engine option (``options.ENGINE_OPTIONS``) -> None (honoured) or the reason it is not."""

    prompt_per_window: ClassVar[bool] = False
    """``decode`` takes a prompt for each window (``prompts``). Otherwise the scheduler puts only
    windows with equal prompts in one call, and never passes ``prompts``."""

    def __init__(self, device: Device, model_name: str, english_only: bool):
        self.device = device
        self.model_name = model_name
        self.english_only = english_only

    @abc.abstractmethod
    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False, prompts: Optional[Sequence[Optional[str]]] = None) -> list[Decoded]:
        """Decode each 16 kHz mono float32 window (at most 30 s) in one batched call.

        ``options.language`` None (multilingual models only) detects each
        window's language; ``options.initial_prompt`` is the previous text the
        decoder sees, or ``prompts[i]`` window i's (only where ``prompt_per_window``).
        ``scores``: fill ``Decoded.segment_logprobs``.
        """

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, self.model_name, self.english_only, self.support, OFF_VALUES)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "device": self.device.torch_device,
                "compute_type": self.device.compute_type}
