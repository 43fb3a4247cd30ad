"""split_by_timestamps and segments_from_pieces (serve/backends/base.py) against openai-whisper's own loop.

Whisper's rules for one window's output tokens: two timestamps in a row close
a segment; a single timestamp at the end closes the last one and the window
is done; text after the last closed segment is unfinished, so the loop seeks
back to that segment's end; no pair at all makes one segment.

The reference is openai-whisper's ``transcribe`` itself, run here on a
scripted model: its ``decode`` returns the tokens under test for the first
window, and a marker segment for any later call. The first window's segments
are what Whisper made of the tokens; the marker's start is where its loop
sought next (no marker: the window was done). Our split of the same tokens
must give the same segments (start, end, text) and the same ``resume_at``.
Where ours differs on purpose, a test of its own asserts both sides.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import whisper
from whisper.decoding import DecodingResult
from whisper.tokenizer import get_tokenizer

from serve.backends.base import TIME_PRECISION, segments_from_pieces, split_by_timestamps, window_stats

TOKENIZER = get_tokenizer(multilingual=False)
BEGIN = TOKENIZER.timestamp_begin
MARKER = " Marker."
STATS = window_stats(-0.25, 0.01, "some text", 0.0)


def at(seconds: float) -> int:
    """The timestamp token for ``seconds`` into the window."""
    return BEGIN + round(seconds / TIME_PRECISION)


def said(text: str) -> list[int]:
    return TOKENIZER.encode(" " + text)


HELLO, KENOBI, FINE = said("Hello there."), said("General Kenobi."), said("You are a bold one.")


class ScriptedModel:
    """What ``whisper.transcribe`` needs of a model, decoding ``first`` for the first window."""

    dims = SimpleNamespace(n_mels=80, n_audio_ctx=1500, n_text_ctx=448)
    device = torch.device("cpu")
    is_multilingual = False
    num_languages = 99

    def __init__(self, first: list[int]):
        self.outputs = [first, [at(0), *TOKENIZER.encode(MARKER), at(0.02)]]

    def decode(self, mel, options):
        # scores that never ask for a temperature fallback, nor make the window silence
        return DecodingResult(audio_features=None, language="en", tokens=list(self.outputs.pop(0)),
                              avg_logprob=0.0, no_speech_prob=0.0, temperature=options.temperature,
                              compression_ratio=1.0)


def whispers(tokens: list[int], duration: float) -> tuple[list[tuple], float | None]:
    """(start, end, text) of each segment with text Whisper's loop made of ``tokens``, and where it sought next."""
    out = whisper.transcribe(ScriptedModel(tokens), np.zeros(round(duration * 16000), np.float32),
                             temperature=0.0, condition_on_previous_text=False, fp16=False, language="en",
                             verbose=None)
    first = [s for s in out["segments"] if s["seek"] == 0]
    later = [s for s in out["segments"] if s["seek"] != 0]
    assert [s["text"] for s in later] in ([], [MARKER]), later
    return ([(round(s["start"], 3), round(s["end"], 3), s["text"]) for s in first if s["text"]],
            later[0]["start"] if later else None)


def ours(tokens: list[int], duration: float) -> tuple[list[tuple], float | None]:
    pieces, resume_at = split_by_timestamps(tokens, BEGIN, duration)
    segments = segments_from_pieces(pieces, TOKENIZER.decode, BEGIN, STATS, duration)
    return [(s.start, s.end, s.text) for s in segments], resume_at


AS_WHISPER = {
    "two segments, a single timestamp ending": ([at(0), *HELLO, at(2), at(2), *KENOBI, at(4)], 30.0,
                                                 ([(0.0, 2.0, " Hello there."), (2.0, 4.0, " General Kenobi.")],
                                                  None)),
    "a gap between segments": ([at(0), *HELLO, at(2), at(2.5), *KENOBI, at(4), at(4), *FINE, at(6.5)], 30.0,
                               ([(0.0, 2.0, " Hello there."), (2.5, 4.0, " General Kenobi."),
                                 (4.0, 6.5, " You are a bold one.")], None)),
    "unfinished text after one closed segment": ([at(0), *HELLO, at(2), at(2), *KENOBI], 30.0,
                                                 ([(0.0, 2.0, " Hello there.")], 2.0)),
    "unfinished text after two, in a short window": (
        [at(0), *HELLO, at(2), at(2.5), *KENOBI, at(4), at(5), *FINE], 12.0,
        ([(0.0, 2.0, " Hello there."), (2.5, 4.0, " General Kenobi.")], 4.0)),
    "no timestamp at all: one segment over the window": ([*HELLO, *KENOBI], 30.0,
                                                        ([(0.0, 30.0, " Hello there. General Kenobi.")], None)),
    "no timestamp in a short window": ([*HELLO], 7.5, ([(0.0, 7.5, " Hello there.")], None)),
    "an opening timestamp only": ([at(0), *HELLO], 30.0, ([(0.0, 30.0, " Hello there.")], None)),
    "a closing timestamp only": ([*HELLO, at(3)], 30.0, ([(0.0, 3.0, " Hello there.")], None)),
    "closed at timestamp zero: ends with the window": ([at(0), *HELLO, at(0)], 30.0,
                                                       ([(0.0, 30.0, " Hello there.")], None)),
    "a timestamp and nothing else": ([at(0)], 30.0, ([], None)),
    "nothing": ([], 30.0, ([], None)),
}


@pytest.mark.parametrize("tokens, duration, expected", AS_WHISPER.values(), ids=AS_WHISPER.keys())
def test_the_same_segments_and_resume_point_as_whispers_loop(tokens, duration, expected):
    assert whispers(tokens, duration) == expected  # the reference says what the case is about
    assert ours(tokens, duration) == expected


def test_a_window_ending_in_a_timestamp_pair_is_done_where_whisper_seeks_back():
    """``text <|2.00|><|2.00|>`` then end of text: Whisper seeks back to 2.00 s whenever the output does
    not end in a single timestamp, even with nothing unfinished. Here the window counts as done: the
    scheduler decodes the rest of a window again when the VAD hears speech after its last segment
    (``Scheduler._finish_window``), which covers this case and the one Whisper's rule cannot see
    (a single timestamp ending while speech goes on)."""
    tokens = [at(0), *HELLO, at(2), at(2)]
    assert whispers(tokens, 30.0) == ([(0.0, 2.0, " Hello there.")], 2.0)
    assert ours(tokens, 30.0) == ([(0.0, 2.0, " Hello there.")], None)


def test_a_lone_segment_starts_at_its_own_timestamp_where_whisper_starts_it_at_the_window():
    """No pair: Whisper's one segment starts where the window does, whatever its first timestamp says."""
    tokens = [at(1), *HELLO, at(3)]
    assert whispers(tokens, 30.0) == ([(0.0, 3.0, " Hello there.")], None)
    assert ours(tokens, 30.0) == ([(1.0, 3.0, " Hello there.")], None)


def test_a_segment_ends_no_later_than_the_window_where_whisper_lets_it_run_past():
    """A timestamp beyond the audio (the decoder sees the window padded to 30 s) is cut to the window's end."""
    tokens = [at(0), *HELLO, at(12)]
    assert whispers(tokens, 10.0) == ([(0.0, 12.0, " Hello there.")], None)
    assert ours(tokens, 10.0) == ([(0.0, 10.0, " Hello there.")], None)


def test_an_instantaneous_segment_keeps_its_text_where_whisper_clears_it():
    """``<|1.00|> text <|1.00|>``: Whisper blanks a segment whose start equals its end (its words are gone
    from the transcript); here it is kept, zero seconds long."""
    tokens = [at(1), *HELLO, at(1), at(1), *KENOBI, at(3)]
    assert whispers(tokens, 30.0) == ([(1.0, 3.0, " General Kenobi.")], None)
    assert ours(tokens, 30.0) == ([(1.0, 1.0, " Hello there."), (1.0, 3.0, " General Kenobi.")], None)


# ---- split_by_timestamps' pieces, and segments_from_pieces on its own -------------------------------


def test_pieces_keep_their_timestamp_tokens_and_cover_the_closed_output():
    tokens = [at(0), *HELLO, at(2), at(2.5), *KENOBI, at(4), at(4), *FINE]
    pieces, resume_at = split_by_timestamps(tokens, BEGIN, 30.0)
    assert [p["tokens"] for p in pieces] == [[at(0), *HELLO, at(2)], [at(2.5), *KENOBI, at(4)]]
    assert [(p["start"], p["end"]) for p in pieces] == [(0.0, 2.0), (2.5, 4.0)]
    assert resume_at == 4.0


def test_without_a_pair_the_one_piece_spans_the_window_as_long_as_it_is():
    """Its end is what the engines' word timing is bounded by (transformers), so it is the window's, not 30 s."""
    assert split_by_timestamps([*HELLO], BEGIN, 7.5) == ([{"start": 0.0, "end": 7.5, "tokens": HELLO, "at": 0}], None)
    assert split_by_timestamps([at(1), *HELLO], BEGIN, 7.5) == (
        [{"start": 1.0, "end": 7.5, "tokens": [at(1), *HELLO], "at": 0}], None)


def test_segments_number_the_pieces_with_text_and_carry_the_window_scores():
    pieces = [{"start": 0.0, "end": 1.0, "tokens": [at(0), *said("   "), at(1)]},  # blank: no segment
              {"start": 1.0, "end": 2.5, "tokens": [at(1), *HELLO, at(2.5)]},
              {"start": 2.5, "end": 3.0, "tokens": [at(2.5), at(3)]},  # timestamps only: no segment
              {"start": 3.0, "end": 4.0, "tokens": [at(3), *KENOBI, at(4)]}]
    segments = segments_from_pieces(pieces, TOKENIZER.decode, BEGIN, STATS, 30.0)
    assert [(s.id, s.start, s.end, s.text) for s in segments] == [(0, 1.0, 2.5, " Hello there."),
                                                                  (1, 3.0, 4.0, " General Kenobi.")]
    for s in segments:
        assert (s.avg_logprob, s.no_speech_prob, s.compression_ratio, s.temperature) == (
            STATS["avg_logprob"], STATS["no_speech_prob"], STATS["compression_ratio"], STATS["temperature"])
        assert s.words is None


def test_segment_and_word_times_are_cut_to_the_window_and_rounded():
    words = [{"start": 8.12345, "end": 9.4, "word": " Hello", "probability": np.float32(0.912345)},
             {"start": 9.4, "end": 10.7, "word": " there.", "probability": None}]
    pieces = [{"start": 8.00049, "end": 10.74, "tokens": [at(8), *HELLO, at(10.74)], "words": words}]
    [segment] = segments_from_pieces(pieces, TOKENIZER.decode, BEGIN, STATS, 10.25)
    assert (segment.start, segment.end) == (8.0, 10.25)
    assert [(w.start, w.end, w.word, w.probability) for w in segment.words] == [
        (8.123, 9.4, " Hello", 0.9123), (9.4, 10.25, " there.", None)]
