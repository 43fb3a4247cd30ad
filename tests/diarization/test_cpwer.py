"""cpWER (tests/conversations.cpwer) on hand-made transcripts whose best speaker mapping is known."""

from __future__ import annotations

import pytest

from tests.conversations import cpwer, wer

REF = [("spk0", "the cat sat on the mat"), ("spk1", "a dog ran in the park"), ("spk0", "then it slept")]
"""spk0: 9 words, spk1: 6; 15 in all."""


def test_perfect_with_other_labels_is_zero():
    hyp = [("SPEAKER_01", "the cat sat on the mat"), ("SPEAKER_00", "a dog ran in the park"),
           ("SPEAKER_01", "then it slept")]
    out = cpwer(REF, hyp)
    assert out == {"cpwer": 0.0, "errors": 0, "words": 15, "mapping": {"SPEAKER_01": "spk0", "SPEAKER_00": "spk1"}}


def test_word_errors_count_after_normalising():
    hyp = [("A", "The cat sat on a mat."), ("B", "A dog ran in the park!"), ("A", "then it slept")]
    out = cpwer(REF, hyp)
    assert (out["errors"], out["words"], out["mapping"]) == (1, 15, {"A": "spk0", "B": "spk1"})


def test_a_turn_given_to_the_wrong_speaker_costs_its_words_twice():
    # "then it slept" labelled as the dog's speaker: 3 deleted from spk0, 3 inserted into spk1
    hyp = [("A", "the cat sat on the mat"), ("B", "a dog ran in the park"), ("B", "then it slept")]
    out = cpwer(REF, hyp)
    assert (out["errors"], out["mapping"]) == (6, {"A": "spk0", "B": "spk1"})
    assert out["cpwer"] == pytest.approx(6 / 15)
    assert wer(" ".join(t for _, t in REF), " ".join(t for _, t in hyp)) == 0.0, "plain WER ignores speakers"


def test_a_missing_speaker_counts_as_deletions():
    # one voice found for two: it pairs with spk0 (the better match), spk1's 6 words are deleted
    hyp = [("A", "the cat sat on the mat"), ("A", "then it slept")]
    out = cpwer(REF, hyp)
    assert (out["errors"], out["words"], out["mapping"]) == (6, 15, {"A": "spk0"})


def test_an_extra_speaker_counts_as_insertions():
    # spk0's last turn split off as a third voice: deleted from spk0 and inserted by the extra speaker
    hyp = [("A", "the cat sat on the mat"), ("B", "a dog ran in the park"), ("C", "then it slept"),
           ("C", "hello")]
    out = cpwer(REF, hyp)
    assert (out["errors"], out["mapping"]) == (3 + 4, {"A": "spk0", "B": "spk1"})


def test_mapping_is_the_best_overall_not_greedy():
    # B is the nearer to both x (2 errors against A's 3) and y (1 against 3); giving B to x, as a greedy
    # pass over x first would, costs 2 + 3 = 5, giving it to y costs 3 + 1 = 4
    ref = [("x", "cold pink"), ("y", "green pink")]
    hyp = [("A", "warm blue red pink"), ("B", "green pink pink")]
    out = cpwer(ref, hyp)
    assert (out["errors"], out["words"], out["mapping"]) == (4, 4, {"A": "x", "B": "y"})


def test_nothing_heard():
    assert cpwer(REF, [])["errors"] == 15 and cpwer(REF, [])["cpwer"] == 1.0
