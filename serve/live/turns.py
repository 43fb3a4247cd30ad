"""Where a live speaker's turns start and stop: Silero VAD run over the stream as it arrives.

The same Silero model the batch path uses (faster-whisper's asset), but run
32 ms at a time with its recurrent state carried from frame to frame, so a
frame costs one small step (about 0.15 ms on a 2-core CPU) however long the
session. ``TurnDetector`` turns the speech probabilities into OpenAI's
server-VAD events: a turn starts on speech, and stops once the speech has
been followed by ``silence_duration_ms`` of silence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
CHUNK = 512
"""Samples per VAD step (32 ms): what the Silero model takes at 16 kHz."""
CONTEXT = 64
"""Samples of the previous step the model sees before each step."""
MIN_SPEECH_MS = 96
"""Speech shorter than this (a click, a breath) does not start a turn."""


@functools.lru_cache(maxsize=1)
def _session():
    """The Silero model's ONNX session, shared by every stream of the process (``run`` is thread-safe)."""
    from faster_whisper.vad import get_vad_model  # the model file faster-whisper ships

    return get_vad_model().session


class SpeechProbability:
    """Silero's speech probability for each 32 ms step of one stream, its state kept between calls."""

    def __init__(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of the whole steps completed by ``samples`` (int16), in order."""
        audio = np.concatenate([self._pending, samples.astype(np.float32) / 32768.0])
        steps = len(audio) // CHUNK
        self._pending = audio[steps * CHUNK:]
        probabilities = np.empty(steps, np.float32)
        for i in range(steps):
            chunk = audio[i * CHUNK:(i + 1) * CHUNK]
            x = np.concatenate([self._context, chunk])[None, :]
            out, self._h, self._c = _session().run(None, {"input": x, "h": self._h, "c": self._c})
            probabilities[i] = float(np.asarray(out).reshape(-1)[0])
            self._context = chunk[-CONTEXT:]
        return probabilities


@dataclass(frozen=True)
class TurnEvent:
    kind: str
    """``started`` or ``stopped``."""
    sample: int
    """Where, in samples from the session's start: the speech's first step, or the end of its last."""


class TurnDetector:
    """OpenAI's server VAD: ``threshold``, ``silence_duration_ms`` (``prefix_padding_ms`` is the session's)."""

    def __init__(self, threshold: float = 0.5, silence_duration_ms: int = 500):
        self.threshold = threshold
        self.release = max(0.01, threshold - 0.15)  # Silero's hysteresis: speech goes on above this
        self.silence_steps = max(1, round(silence_duration_ms * SAMPLE_RATE / 1000 / CHUNK))
        self.min_speech_steps = max(1, round(MIN_SPEECH_MS * SAMPLE_RATE / 1000 / CHUNK))
        self.vad = SpeechProbability()
        self.speaking = False
        self._step = 0
        self._run_start: Optional[int] = None  # first step of the speech run that may start a turn
        self._last_speech = 0  # the step after the last speech step
        self.probabilities: list[float] = []
        """Recent steps' probabilities (the session cuts a long turn at the quietest), with ``first_step``."""
        self.first_step = 0

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        events = []
        for p in self.vad.feed(samples):
            step = self._step
            self._step += 1
            self.probabilities.append(float(p))
            if not self.speaking:
                if p >= self.threshold:
                    self._run_start = step if self._run_start is None else self._run_start
                    if step + 1 - self._run_start >= self.min_speech_steps:
                        self.speaking, self._last_speech = True, step + 1
                        events.append(TurnEvent("started", self._run_start * CHUNK))
                else:
                    self._run_start = None
            elif p >= self.release:
                self._last_speech = step + 1
            elif step + 1 - self._last_speech >= self.silence_steps:
                self.speaking, self._run_start = False, None
                events.append(TurnEvent("stopped", self._last_speech * CHUNK))
        return events

    @property
    def pausing(self) -> bool:
        """Speaking, but quiet for at least half the silence that ends a turn: more likely its end than a pause."""
        return self.speaking and self._step - self._last_speech >= max(1, self.silence_steps // 2)

    def quietest(self, start: int, end: int) -> int:
        """The sample, within [start, end), at the start of the step least likely to be speech (a cut point)."""
        first, last = max(start // CHUNK, self.first_step), min(end // CHUNK, self._step)
        if last <= first:
            return end
        window = self.probabilities[first - self.first_step:last - self.first_step]
        return (first + int(np.argmin(window))) * CHUNK

    def forget_before(self, sample: int) -> None:
        """Probabilities before ``sample`` are no longer needed (bounded memory over a long session)."""
        drop = min(sample // CHUNK, self._step) - self.first_step
        if drop > 0:
            del self.probabilities[:drop]
            self.first_step += drop
