"""Word timestamps where the words were said: each word in its segment, segments in order, as without words.

The conversation below (two espeak voices, 48 s) is cut by the VAD into a
batch of two windows of different lengths (26.7 s and 21.2 s). On tiny.en the
ctranslate2 decoder closes one segment in each, then loops on " No, no, ..."
until its length limit: the loop is dropped and the rest of each window is
decoded again (two multi-segment windows). The first segments' words were
aligned against the whole window while their text covers its first 4 s, and
came back at 20.3-26.7 s ("The old captain ...") and 26.8-48.0 s
("The maker ..."), out of order.
"""

from __future__ import annotations

import pytest

from tests import conversations

SLACK_S = 0.1
"""How far a word may stick out of its segment (transformers does not clamp a segment's first word to
its start timestamp: " kite" at 34.988 s in a segment from 35.048 s)."""
NEAR_S = 2.0
"""A segment with words starts within this of the same segment without them (whose times, from the
decoder's timestamp tokens, openai's tiny.en puts on whole seconds here: 9.0 s for a word at 10.02 s)."""


@pytest.fixture(scope="module")
def talk():
    return conversations.conversation(2, 45, seed=3)


def test_words_lie_in_their_segments_in_order_where_the_segments_are(engine, talk):
    plain = engine.transcribe(talk.path, word_timestamps=False).segments
    timed = engine.transcribe(talk.path, word_timestamps=True).segments
    assert len(timed) >= 10, [s.text for s in timed]
    starts = [s.start for s in timed]
    assert starts == sorted(starts), [(s.start, s.end, s.text) for s in timed]
    for s in timed:
        assert s.words, f"{engine.name}: no words for {s.text!r}"
        assert all(s.start - SLACK_S <= w.start <= w.end <= s.end + SLACK_S for w in s.words), \
            (engine.name, s.start, s.end, [(w.start, w.end, w.word) for w in s.words])
        # the same text decoded without words started at about the same time
        same = [p.start for p in plain if p.text == s.text]
        if same:
            assert min(abs(p - s.start) for p in same) <= NEAR_S, (engine.name, s.text, s.start, same)
    matched = sum(any(p.text == s.text for p in plain) for s in timed)
    assert matched >= len(timed) // 2, f"{engine.name}: the two transcripts hardly share a segment"


def test_alignment_frames_stop_at_the_end_of_the_last_piece():
    from serve.backends.base import alignment_frames

    window = 26 * 16000 + 123
    assert alignment_frames([], window) == 2600
    assert alignment_frames([{"start": 0.0, "end": 4.12}], window) == 412
    assert alignment_frames([{"start": 0.0, "end": 3.0}, {"start": 3.0, "end": 7.5}], window) == 750
    assert alignment_frames([{"start": 0.0, "end": 26.0077}], window) == 2600  # never past the window
    assert alignment_frames([{"start": 0.0, "end": 0.0}], window) == 2  # something to align against
    assert alignment_frames([{"start": 0.0, "end": 30.0}], 40 * 16000) == 3000
