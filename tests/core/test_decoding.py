"""Whisper's rules around an engine call (serve/core/decoding.py), on a scripted engine: no model needed.

Temperature fallback, silence, the best result kept, and where to decode
again after an early stop. The scheduler's use of them (the rest of a window
decoded again, in order) is in test_scheduler_faults.py with the real model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from serve.core import cpu_turns, decoding
from serve.core.engine import Decoded, Device, Engine
from serve.core.options import DecodeOptions
from serve.core.results import Segment

OPTIONS = DecodeOptions("en", "transcribe", None, (0.0, 0.2, 0.4, 0.6), 1, False)


def _decoded(text="hello there", avg_logprob=-0.3, no_speech_prob=0.1, compression_ratio=1.2, temperature=0.0,
             resume_at=None, end=2.0) -> Decoded:
    return Decoded((Segment(0, 0.0, end, text),), "en", avg_logprob, no_speech_prob, compression_ratio, temperature,
                   resume_at)


class Scripted(Engine):
    """Answers each window by a function of (window index in the first call, temperature); counts calls."""

    name = "scripted"
    support: dict = {}

    def __init__(self, answer):
        super().__init__(Device("cpu"), "scripted", True)
        self.answer = answer
        self.calls: list[tuple[int, float]] = []

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False) -> list[Decoded]:
        self.calls.append((len(windows), temperature))
        return [self.answer(int(w[0]), temperature) for w in windows]


def _windows(n: int) -> list[np.ndarray]:
    return [np.full(16000, i, dtype=np.float32) for i in range(n)]  # the first sample names the window


def test_a_loop_is_decoded_again_hotter_and_the_good_result_kept():
    engine = Scripted(lambda i, t: _decoded(compression_ratio=3.0, temperature=t) if t < 0.4
                      else _decoded(text="fine", temperature=t))
    [d] = decoding.decode_with_fallback(engine, _windows(1), OPTIONS, [True])
    assert engine.calls == [(1, 0.0), (1, 0.2), (1, 0.4)]
    assert d.temperature == 0.4 and d.segments[0].text == "fine"


def test_an_unlikely_text_is_decoded_again_and_only_the_windows_that_need_it():
    # window 0 is fine at once; window 1 is unlikely until 0.6
    engine = Scripted(lambda i, t: _decoded(avg_logprob=-2.0, temperature=t) if i == 1 and t < 0.6
                      else _decoded(temperature=t))
    out = decoding.decode_with_fallback(engine, _windows(2), OPTIONS, [True, True])
    assert engine.calls == [(2, 0.0), (1, 0.2), (1, 0.4), (1, 0.6)]
    assert [d.temperature for d in out] == [0.0, 0.6]


class Prompted(Scripted):
    """``Scripted``, taking a prompt per window (as ctranslate2): records each call's prompts."""

    prompt_per_window = True

    def __init__(self, answer):
        super().__init__(answer)
        self.prompts: list[list] = []

    def decode(self, windows, options, temperature, scores=False, prompts=None):
        self.prompts.append(list(prompts))
        return super().decode(windows, options, temperature, scores)


def test_a_window_decoded_again_keeps_its_own_prompt():
    engine = Prompted(lambda i, t: _decoded(avg_logprob=-2.0 if i == 1 and t == 0 else -0.3, temperature=t))
    decoding.decode_with_fallback(engine, _windows(3), OPTIONS, [True] * 3, prompts=["zero", "one", None])
    assert engine.prompts == [["zero", "one", None], ["one"]]


def test_silence_is_not_decoded_again_and_yields_nothing():
    engine = Scripted(lambda i, t: _decoded(avg_logprob=-1.5, no_speech_prob=0.9, temperature=t))
    [d] = decoding.decode_with_fallback(engine, _windows(1), OPTIONS, [True])
    assert engine.calls == [(1, 0.0)]
    assert decoding.is_silence(d) and not decoding.needs_fallback(d)


def test_a_window_not_allowed_to_fall_back_is_decoded_once():
    """Packed windows are not decoded hotter: their requests are decoded again alone instead."""
    engine = Scripted(lambda i, t: _decoded(compression_ratio=3.0, temperature=t))
    decoding.decode_with_fallback(engine, _windows(2), OPTIONS, [False, True])
    assert engine.calls == [(2, 0.0), (1, 0.2), (1, 0.4), (1, 0.6)]


def test_when_every_temperature_loops_the_least_bad_is_kept():
    """Whisper keeps the last temperature's result; we keep the best that is not a loop, else the likeliest."""
    logprobs = {0.0: -1.5, 0.2: -1.2, 0.4: -1.8, 0.6: -1.4}
    engine = Scripted(lambda i, t: _decoded(avg_logprob=logprobs[t], compression_ratio=2.6, temperature=t))
    [d] = decoding.decode_with_fallback(engine, _windows(1), OPTIONS, [True])
    assert len(engine.calls) == 4 and d.temperature == 0.2
    loop = _decoded(avg_logprob=-0.1, compression_ratio=3.0)
    assert decoding.better(loop, _decoded(avg_logprob=-0.9)).avg_logprob == -0.9


@pytest.fixture(scope="module")
def speech_then_silence(corpus) -> np.ndarray:
    """A spoken sentence, then 3 s of silence, then the sentence again."""
    from serve.core.audio import decode

    clip = decode(corpus[0].path)
    return np.concatenate([clip, np.zeros(48000, np.float32), clip])


def test_an_unfinished_window_is_decoded_again_from_where_the_decoder_stopped(speech_then_silence):
    assert decoding.stopped_at(speech_then_silence, _decoded(resume_at=2.5)) == 2.5
    assert decoding.stopped_at(speech_then_silence, _decoded(resume_at=0.2)) is None  # no progress: not again


def test_speech_after_the_last_segment_is_decoded_again(speech_then_silence):
    first_end = (len(speech_then_silence) - 48000) / 2 / 16000
    # the last segment closed after the first sentence: the second is still to be decoded
    assert decoding.stopped_at(speech_then_silence, _decoded(end=first_end)) == first_end
    # it closed after the second sentence: nothing left
    assert decoding.stopped_at(speech_then_silence, _decoded(end=len(speech_then_silence) / 16000)) is None


def test_compression_ratio_is_whispers():
    assert decoding.compression_ratio("") == 0.0
    assert decoding.compression_ratio("the cat " * 40) > decoding.COMPRESSION_RATIO_THRESHOLD
    assert decoding.compression_ratio("Please call Stella and ask her to bring these things.") < 1.5


@pytest.mark.parametrize("kind, held", [("cpu", True), ("cuda", False)])
def test_each_engine_call_on_a_cpu_holds_the_cpus_turn(kind, held):
    """The speaker embedder's forward passes take turns with these calls (cpu_turns.py); a GPU's calls do not."""
    seen = []

    def answer(i, t):
        seen.append(cpu_turns.CPU.held)
        return _decoded(compression_ratio=3.0 if t == 0 else 1.0, temperature=t)

    engine = Scripted(answer)
    engine.device = Device(kind)
    decoding.decode_with_fallback(engine, _windows(1), OPTIONS, [True])
    assert seen == [held, held] and not cpu_turns.CPU.held  # two calls, each in its own turn, and given back
