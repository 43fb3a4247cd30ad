"""Response writers and Accept negotiation (no model needed)."""

from __future__ import annotations

import json

import pytest

from serve.errors import NotAcceptableError
from serve.http.errors import status_of
from serve.http.formats import SUPPORTED, format_timestamp, writer_for_accept
from serve.core.results import Segment, Transcription, Word

RESULT = Transcription(
    text=" Hello there. General Kenobi!",
    language="en",
    duration=3723.5,
    segments=(
        Segment(0, 0.0, 1.25, " Hello there.", words=(Word(0.0, 0.5, " Hello", 0.9), Word(0.5, 1.25, " there.", 0.8))),
        Segment(1, 3661.001, 3723.5, " General\tKenobi! --> ", words=(Word(3661.001, 3700.0, " General", 0.7),
                                                                        Word(3700.0, 3723.5, " Kenobi!", 0.6))),
    ),
)


def render(accept: str | None) -> tuple[str, str]:
    writer = writer_for_accept(accept)
    return writer.content_type, writer.render(RESULT, {"backend": "x", "model": "tiny.en"})


@pytest.mark.parametrize(("seconds", "hours", "marker", "expected"), [
    (0.0, False, ".", "00:00.000"),
    (1.2345, False, ".", "00:01.234"),  # rounds to the millisecond
    (61.0, True, ",", "00:01:01,000"),
    (3661.001, False, ".", "01:01:01.001"),  # hours appear when needed even for WebVTT
    (59.9996, False, ".", "01:00.000"),  # carries into the next minute
])
def test_format_timestamp(seconds, hours, marker, expected):
    assert format_timestamp(seconds, hours, marker) == expected


def test_json_has_the_transcription_and_the_extra_fields():
    content_type, body = render("application/json")
    data = json.loads(body)
    assert content_type == "application/json"
    assert data["text"] == RESULT.text and data["language"] == "en" and data["duration"] == 3723.5
    assert [s["start"] for s in data["segments"]] == [0.0, 3661.001]
    assert [w["word"] for w in data["words"]] == [" Hello", " there.", " General", " Kenobi!"]
    assert data["backend"] == "x" and data["model"] == "tiny.en"


def test_text_is_one_line_per_segment():
    content_type, body = render("text/plain")
    assert content_type == "text/plain; charset=utf-8"
    assert body == "Hello there.\nGeneral\tKenobi! ->\n"


def test_vtt():
    content_type, body = render("text/vtt")
    assert content_type.startswith("text/vtt")
    assert body.startswith("WEBVTT\n\n")
    cues = body.split("\n\n")[1:]
    assert cues[0] == "00:00.000 --> 00:01.250\nHello there."
    # a "-->" inside text would break the cue: it is defused
    assert cues[1].splitlines() == ["01:01:01.001 --> 01:02:03.500", "General\tKenobi! ->"]


def test_srt_numbers_cues_and_uses_commas():
    content_type, body = render("application/x-subrip")
    assert content_type.startswith("application/x-subrip")
    blocks = [b for b in body.split("\n\n") if b.strip()]
    assert [b.splitlines()[0] for b in blocks] == ["1", "2"]
    assert blocks[0].splitlines()[1] == "00:00:00,000 --> 00:00:01,250"
    assert blocks[1].splitlines()[1] == "01:01:01,001 --> 01:02:03,500"


def test_tsv_is_milliseconds_with_a_header_and_no_stray_tabs():
    content_type, body = render("text/tab-separated-values")
    assert content_type.startswith("text/tab-separated-values")
    rows = [r.split("\t") for r in body.splitlines()]
    assert rows == [["start", "end", "text"], ["0", "1250", "Hello there."], ["3661001", "3723500", "General Kenobi! ->"]]


def test_no_segments_still_gives_the_text():
    bare = Transcription(text="just text", language="en", duration=2.0)
    assert writer_for_accept("text/plain").render(bare, {}) == "just text\n"
    assert "00:00.000 --> 00:02.000\njust text" in writer_for_accept("text/vtt").render(bare, {})
    silent = Transcription(text="", language="en", duration=2.0)
    assert writer_for_accept("text/plain").render(silent, {}) == ""
    assert writer_for_accept("text/tab-separated-values").render(silent, {}) == "start\tend\ttext\n"


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "application/json"),
    ("", "application/json"),
    ("*/*", "application/json"),
    ("text/*", "text/plain"),
    ("application/*", "application/json"),
    ("text/vtt", "text/vtt"),
    ("TEXT/VTT", "text/vtt"),
    ("text/vtt; charset=utf-8", "text/vtt"),
    ("application/json;q=0.5, application/x-subrip", "application/x-subrip"),
    ("text/html, text/tab-separated-values;q=0.1", "text/tab-separated-values"),
    ("image/png, */*;q=0.1", "application/json"),
    ("text/plain;q=0.2, text/vtt;q=0.9, */*;q=0.1", "text/vtt"),
])
def test_accept_negotiation(accept, expected):
    assert writer_for_accept(accept).mimetype == expected


@pytest.mark.parametrize("accept", ["image/png", "text/html", "application/json;q=0", "application/xml, text/csv"])
def test_unsupported_accept_is_406_listing_every_supported_type(accept):
    with pytest.raises(NotAcceptableError) as info:
        writer_for_accept(accept)
    assert status_of(info.value) == 406
    for mimetype in SUPPORTED:
        assert mimetype in info.value.message
