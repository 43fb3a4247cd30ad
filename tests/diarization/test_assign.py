"""Speakers over a transcript: words by largest overlap, segments split where the voice changes."""

from __future__ import annotations

from serve.core.results import Segment, Word
from serve.diarization.assign import assign, label, speaker_of, speaking_times
from serve.diarization.diarizer import SpeakerTurn as T


def words(*spans):
    return tuple(Word(s, e, f" w{i}") for i, (s, e) in enumerate(spans))


def test_labels_are_two_digit_in_order():
    assert [label(i) for i in (0, 1, 12)] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_12"]


def test_a_word_takes_the_speaker_it_overlaps_most():
    turns = [T(0.0, 1.0, 0), T(1.0, 3.0, 1)]
    assert speaker_of(0.6, 1.2, turns) == 0  # 0.4 s of speaker 0, 0.2 s of speaker 1
    assert speaker_of(0.9, 1.5, turns) == 1


def test_overlapping_speech_goes_to_the_dominant_speaker():
    turns = [T(0.0, 4.0, 0), T(1.0, 1.3, 1)]  # speaker 1 says something over speaker 0
    assert speaker_of(0.9, 1.6, turns) == 0
    assert speaker_of(1.1, 1.25, [T(1.0, 1.3, 1), T(1.2, 4.0, 0)]) == 1  # 0.15 s against 0.05 s


def test_a_word_in_no_turn_takes_the_nearest():
    turns = [T(0.0, 1.0, 0), T(3.0, 4.0, 1)]
    assert speaker_of(1.2, 1.4, turns) == 0
    assert speaker_of(2.5, 2.8, turns) == 1
    assert speaker_of(0.0, 1.0, []) is None


def test_a_segment_spanning_a_change_is_split_at_it():
    segment = Segment(0, 0.0, 4.0, " w0 w1 w2 w3", words=words((0.0, 0.5), (0.6, 1.0), (2.1, 2.5), (3.0, 3.9)))
    later = Segment(1, 4.0, 5.0, " w0", words=words((4.1, 4.8)))
    out = assign([segment, later], [T(0.0, 2.0, 0), T(2.0, 4.3, 1), T(4.3, 5.0, 0)])
    assert [(s.id, s.start, s.end, s.text, s.speaker) for s in out] == [
        (0, 0.0, 1.0, " w0 w1", "SPEAKER_00"),
        (1, 2.1, 4.0, " w2 w3", "SPEAKER_01"),
        (2, 4.0, 5.0, " w0", "SPEAKER_00"),
    ]
    assert [w.speaker for s in out for w in s.words] == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01", "SPEAKER_01",
                                                         "SPEAKER_00"]
    assert all(len({w.speaker for w in s.words}) == 1 for s in out)


def test_a_segment_without_words_takes_its_dominant_speaker_whole():
    out = assign([Segment(0, 0.0, 4.0, " Hello there.")], [T(0.0, 1.0, 0), T(1.0, 4.0, 1)])
    assert [(s.text, s.speaker, s.words) for s in out] == [(" Hello there.", "SPEAKER_01", None)]


def test_no_turns_no_speakers():
    out = assign([Segment(0, 0.0, 1.0, " w0", words=words((0.1, 0.5)))], [])
    assert out[0].speaker is None and out[0].words[0].speaker is None


def test_speaking_times_count_each_speakers_time_once():
    turns = [T(0.0, 2.0, 0), T(2.0, 3.5, 1), T(1.5, 2.5, 0), T(4.0, 5.0, 0)]
    assert speaking_times(turns) == {"SPEAKER_00": 3.5, "SPEAKER_01": 1.5}
    assert speaking_times([]) == {}
