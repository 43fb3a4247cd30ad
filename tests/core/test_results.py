"""A transcript as JSON: ``speaker`` appears only when the request was diarized."""

from __future__ import annotations

from serve.core.results import Segment, Transcription, Word, segment_dict, word_dict


def test_undiarized_answers_keep_their_shape():
    segment = Segment(0, 0.0, 1.0, " Hi.", words=(Word(0.0, 0.5, " Hi.", 0.9),))
    assert "speaker" not in segment_dict(segment)
    assert "speaker" not in segment_dict(segment)["words"][0]
    assert "speaker" not in Transcription(" Hi.", "en", 1.0, (segment,)).to_dict()["words"][0]


def test_diarized_segments_and_words_carry_their_speaker():
    word = Word(0.0, 0.5, " Hi.", 0.9, speaker="SPEAKER_01")
    segment = Segment(0, 0.0, 1.0, " Hi.", words=(word,), speaker="SPEAKER_01")
    assert segment_dict(segment)["speaker"] == "SPEAKER_01"
    assert word_dict(word)["speaker"] == "SPEAKER_01"
    assert Transcription(" Hi.", "en", 1.0, (segment,)).to_dict()["words"][0]["speaker"] == "SPEAKER_01"
