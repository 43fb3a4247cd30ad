"""Response formats chosen by the Accept header: JSON, text, WebVTT, SubRip, TSV, and streams.

The subtitle writers follow openai-whisper's ``get_writer`` output (so files
are interchangeable with the ``whisper`` CLI's), but write to a string.
Accept is parsed with q-values (werkzeug's MIMEAccept): ``*/*`` or no
Accept gives JSON; a type we cannot produce is a 406 listing what we can.

Streaming (``stream=true``, or ``Accept: text/event-stream``) sends one
self-contained JSON object per segment as it is decoded, then one with the
summary, or one with the error that cut the stream short: as JSON Lines
(``application/jsonlines``) or as server-sent events with the same objects.
Each object's ``type`` (segment, done, error) tells a complete transcript
from a cut one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from ..core.results import Segment, Transcription, segment_dict
from ..errors import NotAcceptableError


@dataclass(frozen=True)
class Writer:
    mimetype: str
    render: Callable[[Transcription, dict], str]
    """(transcription, extra JSON fields) -> body text."""

    @property
    def content_type(self) -> str:
        return self.mimetype if self.mimetype == "application/json" else f"{self.mimetype}; charset=utf-8"


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``HH:MM:SS.mmm`` as whisper writes it (hours optional for WebVTT, comma for SubRip)."""
    assert seconds >= 0, "non-negative timestamp expected"
    millis = round(seconds * 1000.0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cues(t: Transcription):
    """(start, end, text, speaker) per segment with text; a segment-less result is one cue over the audio."""
    if not t.segments:
        if t.text.strip():
            yield 0.0, t.duration, t.text.strip(), None
        return
    for s in t.segments:
        text = s.text.strip().replace("-->", "->")  # "-->" would end a cue's timing line
        if text:
            yield s.start, s.end, text, s.speaker


def _said(text: str, speaker: Optional[str]) -> str:
    """A cue's text, after ``[SPEAKER_00]: `` when diarized (as WhisperX writes txt and srt)."""
    return text if speaker is None else f"[{speaker}]: {text}"


def render_json(t: Transcription, extra: dict) -> str:
    return json.dumps({**t.to_dict(), **extra}, ensure_ascii=False)


def render_text(t: Transcription, extra: dict) -> str:
    lines = [_said(text, speaker) for _, _, text, speaker in _cues(t)]
    return "\n".join(lines) + "\n" if lines else ""


def render_vtt(t: Transcription, extra: dict) -> str:
    """WebVTT; a diarized cue is a voice span, ``<v SPEAKER_00>text``, which players show as the speaker."""
    out = ["WEBVTT", ""]
    for start, end, text, speaker in _cues(t):
        voice = "" if speaker is None else f"<v {_voice(speaker)}>"
        out += [f"{format_timestamp(start)} --> {format_timestamp(end)}", voice + text, ""]
    return "\n".join(out)


def _voice(speaker: str) -> str:
    """A voice tag's annotation ends at ``>`` and a line break; a known speaker's name may hold them."""
    return " ".join(speaker.replace(">", " ").replace("<", " ").replace("&", " and ").split())


def render_srt(t: Transcription, extra: dict) -> str:
    out = []
    for i, (start, end, text, speaker) in enumerate(_cues(t), start=1):
        stamp = lambda x: format_timestamp(x, always_include_hours=True, decimal_marker=",")  # noqa: E731
        out += [str(i), f"{stamp(start)} --> {stamp(end)}", _said(text, speaker), ""]
    return "\n".join(out)


def render_tsv(t: Transcription, extra: dict) -> str:
    """``start<TAB>end<TAB>text`` in integer milliseconds, as whisper's tsv writer; diarized, a ``speaker`` column last."""
    diarized = t.speakers is not None
    rows = ["start\tend\ttext" + ("\tspeaker" if diarized else "")]
    for start, end, text, speaker in _cues(t):
        row = f"{round(1000 * start)}\t{round(1000 * end)}\t{text.replace(chr(9), ' ')}"
        rows.append(row + (f"\t{(speaker or '').replace(chr(9), ' ')}" if diarized else ""))
    return "\n".join(rows) + "\n"


WRITERS: tuple[Writer, ...] = (
    # Order matters: on a tie (*/*, text/*) the first listed wins.
    Writer("application/json", render_json),
    Writer("text/plain", render_text),
    Writer("text/vtt", render_vtt),
    Writer("application/x-subrip", render_srt),
    Writer("text/tab-separated-values", render_tsv),
)
SUPPORTED = tuple(w.mimetype for w in WRITERS)
DEFAULT = WRITERS[0]
EVENT_STREAM = "text/event-stream"


def writer_for_accept(accept: Optional[str]) -> Writer:
    """The writer the Accept header prefers; JSON when there is none. Raises NotAcceptableError.

    ``text/event-stream`` is accepted too: it asks for a streamed answer (see ``stream_writer``).
    """
    if accept is None or not accept.strip():
        return DEFAULT
    # Media-type parameters (charset=...) would stop werkzeug matching the bare type: drop them.
    parsed = MIMEAccept([(value.split(";")[0].strip(), q) for value, q in parse_accept_header(accept, MIMEAccept)])
    best = parsed.best_match(SUPPORTED + (EVENT_STREAM,))
    if best is None:
        raise NotAcceptableError(
            f"cannot produce {accept!r}; supported Accept types: {', '.join(SUPPORTED)} (*/* gives JSON), "
            f"and {EVENT_STREAM} for a streamed answer"
        )
    if best == EVENT_STREAM:
        return SSE_MARKER
    return next(w for w in WRITERS if w.mimetype == best)


SSE_MARKER = Writer(EVENT_STREAM, lambda t, extra: render_json(t, extra))
"""What ``writer_for_accept`` returns for ``text/event-stream``: the answer must be streamed."""


# ---- streams ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamWriter:
    """One self-contained JSON object per event, as JSON Lines or as server-sent events."""

    content_type: str
    sse: bool

    def _line(self, kind: str, body: dict) -> str:
        data = json.dumps({"type": kind, **body}, ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n" if self.sse else data + "\n"

    def segment(self, segment: Segment) -> str:
        return self._line("segment", segment_dict(segment))

    def done(self, t: Transcription, extra: dict) -> str:
        summary = {k: v for k, v in t.to_dict().items() if k not in ("segments", "words")}
        return self._line("done", {**summary, "segments": len(t.segments), **extra})

    def error(self, exc: BaseException, status: int) -> str:
        from .errors import error_message, error_type, request_id

        return self._line("error", {"error": {"type": error_type(exc), "message": error_message(exc),
                                              "status": status, "request_id": request_id()}})


JSON_LINES = StreamWriter("application/jsonlines", sse=False)
SERVER_SENT_EVENTS = StreamWriter(EVENT_STREAM, sse=True)


def stream_writer(writer: Writer) -> StreamWriter:
    """The stream for a negotiated writer: events for text/event-stream, JSON Lines for JSON; else 406."""
    if writer is SSE_MARKER:
        return SERVER_SENT_EVENTS
    if writer is DEFAULT:
        return JSON_LINES
    raise NotAcceptableError(f"a streamed answer is JSON Lines (Accept: application/json) or server-sent "
                             f"events (Accept: {EVENT_STREAM}), not {writer.mimetype}")
