"""LocalAgreement-2: a word is sent once two passes agree on it and on all before it, and never taken back."""

from serve.live.agreement import Agreement, joined


def test_words_are_committed_when_two_passes_agree_on_them_and_everything_before():
    a = Agreement()
    assert a.passed("The quick brown") == []  # one pass agrees with nothing
    assert a.passed("The quick brown fox jumps") == ["The", "quick", "brown"]
    assert a.tail() == ["fox", "jumps"]
    assert a.passed("The quick brown fox jumped over") == ["fox"]  # "jumps" vs "jumped": not yet
    assert a.committed == ["The", "quick", "brown", "fox"]


def test_case_and_punctuation_do_not_break_agreement_and_the_latest_spelling_is_sent():
    a = Agreement()
    a.passed("hello world")
    assert a.passed("Hello, world. How") == ["Hello,", "world."]


def test_a_pass_that_disagrees_early_commits_nothing_and_nothing_is_taken_back():
    a = Agreement()
    a.passed("I scream for")
    assert a.passed("I scream for ice") == ["I", "scream", "for"]
    assert a.passed("Ice cream for ice cream") == []  # reads the start differently: committed words stay
    assert a.passed("Ice cream for ice cream") == []  # and the two passes agree only on what is already sent
    assert a.committed == ["I", "scream", "for"]


def test_the_last_pass_adds_every_word_after_the_committed_ones():
    a = Agreement()
    a.passed("one two three")
    a.passed("one two three four")
    assert a.final("one two three four five six.") == ["four", "five", "six."]
    assert a.committed == ["one", "two", "three", "four", "five", "six."]


def test_a_last_pass_that_reads_the_start_differently_neither_loses_nor_doubles_the_end():
    a = Agreement()
    a.passed("I scream for ice")
    a.passed("I scream for ice cream")
    assert a.committed == ["I", "scream", "for", "ice"]
    assert a.final("Ice cream for ice cream, please.") == ["cream,", "please."]


def test_joined_words_make_the_transcript_when_concatenated():
    deltas = [joined(["Hello"], first=True), joined(["big", "world."], first=False), joined([], first=False)]
    assert "".join(deltas) == "Hello big world."
