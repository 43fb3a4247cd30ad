"""The completeness check itself: a misheard sentence is not a drop, a dropped one is.

No model here: the transcripts are the clip's own text, edited, and segments
made from the clip's speech, so each case is exactly what it says.
"""

from __future__ import annotations

import pytest

from tests import speech


@pytest.fixture(scope="module")
def clip() -> speech.Clip:
    return speech.long_clip(1.0)


@pytest.fixture(scope="module")
def sentences(clip) -> list[str]:
    return speech.split_sentences(clip.text)


@pytest.fixture(scope="module")
def stretches(clip, sentences) -> list[tuple[float, float]]:
    found = speech.speech_stretches(clip.path)
    assert len(found) == len(sentences), "espeak-ng's sentence pauses should give one stretch per sentence"
    return found


def segments_of(spans) -> list[dict]:
    return [{"start": a, "end": b} for a, b in spans]


def misheard(sentence: str) -> str:
    """Most words wrong, as tiny.en sometimes hears a sentence."""
    words = sentence.split()
    return " ".join(["blah"] * (len(words) - 2) + words[-2:])


def test_the_exact_transcript_is_complete(clip, stretches):
    assert speech.incomplete(clip, clip.text, segments_of(stretches)) == []


def test_timestamps_a_little_off_are_still_complete(clip, stretches):
    shifted = [(a + 0.4, b + 0.4) for a, b in stretches]
    assert speech.incomplete(clip, clip.text, segments_of(shifted)) == []


def test_one_misheard_sentence_is_not_a_drop(clip, sentences, stretches):
    text = " ".join(misheard(s) if i == 7 else s for i, s in enumerate(sentences))
    assert speech.missing_sentences(sentences, text) == [sentences[7]]
    assert speech.dropped_runs(sentences, text) == []
    assert speech.incomplete(clip, text, segments_of(stretches)) == []


def test_two_consecutive_sentences_gone_are_a_drop(clip, sentences, stretches):
    text = " ".join(s for i, s in enumerate(sentences) if i not in (7, 8))
    assert speech.dropped_runs(sentences, text) == [sentences[7:9]]
    [problem] = speech.incomplete(clip, text)
    assert "2 consecutive sentences dropped" in problem


def test_one_sentence_without_a_segment_is_a_drop(clip, sentences, stretches):
    text = " ".join(s for i, s in enumerate(sentences) if i != 7)
    spans = [span for i, span in enumerate(stretches) if i != 7]
    [problem] = speech.incomplete(clip, text, segments_of(spans))
    assert "has no segment" in problem and f"{stretches[7][0]:.0f}" in problem


def test_many_isolated_misheard_sentences_fail(clip, sentences, stretches):
    text = " ".join(misheard(s) if i % 2 else s for i, s in enumerate(sentences))
    [problem] = speech.incomplete(clip, text, segments_of(stretches))
    assert "misheard" in problem


def test_a_broken_model_fails_every_check(clip, stretches):
    problems = speech.incomplete(clip, "", [])
    assert any("consecutive sentences dropped" in p for p in problems)
    assert sum("has no segment" in p for p in problems) == len(stretches)
