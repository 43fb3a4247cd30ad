"""Known speakers: the voices that OpenAI's ``known_speaker_names[]`` and ``known_speaker_references[]`` name.

OpenAI's ``/v1/audio/transcriptions`` (``response_format=diarized_json``)
takes up to 4 names, each with a reference clip "as a data URL", 2 to 10 s
long, "in any of the same input audio formats supported by ``file``"
(openai-python's and OpenAI's API reference text). A speaker of the request
whose voice matches a clip is labelled with that clip's name instead of
``SPEAKER_nn``; the others keep their labels.

``parse_references`` checks the fields and decodes each clip with the
request decoder (``serve.core.audio``: ffmpeg, its format whitelist, the
Content-Type never trusted), so a ``data:video/webm`` or
``data:application/octet-stream`` URL (what ``mimetypes`` and common
clients send for some files) decodes as well as ``data:audio/wav``. Only
data URLs in base64 are taken, as OpenAI documents: a bare base64 string is
refused rather than guessed at. Line breaks in the base64 are allowed
(``base64`` tools wrap at 76 characters). Each clip is bounded before any
work (``MAX_REFERENCE_CHARS``, ``MAX_REFERENCE_BYTES``) and while decoding
(``MAX_SECONDS``), and must hold speech (the Silero VAD the diarization
uses finds at least ``MIN_SPEECH_S``).

``name_speakers`` embeds each speaker of the request (up to
``MAX_SPEAKER_WINDOWS`` windows of 1.5 s from its turns, averaged into a
unit centroid) and each clip (1.5 s windows every 0.75 s over its speech,
averaged), pairs speakers with clips one to one (Hungarian assignment on
cosine similarity, ``scipy.optimize.linear_sum_assignment``) and keeps a
pair only at ``THRESHOLD`` or above.

The threshold, measured with bench/known_speakers.py (CAM++ on one CPU
thread, the embedded diarization, no speaker count given):

- **Real speech**, pyannote's sample.wav (two people, 30 s): five 2.3-6 s
  references cut from it, each compared with both speakers' centroids (its
  own span left out), as recorded and through three other channels (white
  noise at 20 dB SNR; telephone band, Opus 8 kb/s; echo, MP3 32 kb/s) to
  stand for a clip recorded elsewhere. Same person 0.705-0.906 (median
  0.829; as recorded 0.765 at least), the other person 0.538-0.727 (median
  0.652), n=20 each.
- **espeak-ng**, six conversations of 2-4 of ``VOICES`` (60-115 s),
  references of sentences the conversation never says, at 2.2 s, one
  sentence (about 3 s) and three (6-9.5 s): same voice 0.829-0.983 (n=51,
  the 2.2 s ones lowest); another of ``VOICES`` 0.503-0.822 (n=153);
  eight other espeak voices and variants 0.494-0.948 (n=408). Every espeak
  voice is the same formant synthesizer, so a variant at another pitch
  (en-us+m3 at 60 against 25) or espeak's default en-us sits as near a
  conversation voice (0.93-0.95) as that voice's own references: no
  threshold tells those apart, and none should be fitted to them.

``THRESHOLD`` = 0.75 lies between real people's highest cross similarity
(0.727) and the same person's lowest as recorded (0.765); across channels
3 of 20 same-person pairs (0.705, 0.717, 0.733, all from the two shortest
clips) fall under it, so a name is missed rather than given wrongly: a
missed name leaves ``SPEAKER_nn``, a wrong one misattributes words. Every
espeak speaker is named right when each voice present has a reference
(51 of 51); when only absent voices' references are given (the two other
``VOICES`` and two of the near-clones above), 32 of 51 espeak speakers
take a wrong name. Unverified: real
people recorded twice in different sessions (no such labelled audio
offline).
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import AudioDecodeError, InvalidParameterError, PayloadTooLargeError
from .diarizer import MIN_USABLE, SpeakerTurn, windows
from .embedding import WINDOW
from .regions import SAMPLE_RATE, SpeechRegions

NAMES = "known_speaker_names[]"
REFERENCES = "known_speaker_references[]"
"""The multipart fields, as OpenAI names them (and its errors' ``param``)."""

MAX_REFERENCES = 4
"""OpenAI's: "Up to 4 speakers are supported" (its OpenAPI spec: maxItems 4 for both lists)."""
MIN_SECONDS = 2.0
MAX_SECONDS = 10.0
"""OpenAI's: "Each sample must be between 2 and 10 seconds"."""
TOLERANCE_S = 0.1
"""Codecs pad or trim a little (mp3's encoder delay, resampling): a clip cut to 2 or 10 s passes within this."""
MAX_REFERENCE_BYTES = 4 * 1024 * 1024
"""One clip's file, once out of base64: 10 s of 48 kHz stereo float32 WAV is 3.84 MB; any compressed
format is a fraction of that."""
MAX_REFERENCE_CHARS = 6_000_000
"""One data URL, looked at before it is decoded: ``MAX_REFERENCE_BYTES`` in base64 (5.59 M characters),
wrapped in 76-character lines (+2.6 %), and its header. A form field must be allowed this size."""
MAX_FORM_CHARS = MAX_REFERENCE_CHARS + 64 * 1024
"""The longest text field a form may hold (Flask's MAX_FORM_MEMORY_SIZE): a reference's data URL, with room."""
MAX_NAME_CHARS = 100
"""A name is "a short identifier (for example customer or agent)" (OpenAI); this bounds what a response repeats."""
MIN_SPEECH_S = 1.0
"""Speech the VAD must find in a clip: less is too little to tell a voice by."""
MAX_SPEAKER_WINDOWS = 16
"""Windows embedded per speaker of the request (spread over all its turns): 24 s of its speech at most."""
THRESHOLD = 0.75
"""Cosine similarity of a speaker's centroid and a clip's embedding at or above which the clip names it
(measured: see the module's doc)."""

_LABEL = re.compile(r"SPEAKER_\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    """One known speaker: the name, the clip's 16 kHz mono float32 samples, and where the VAD heard speech."""

    name: str
    samples: np.ndarray
    speech: tuple[tuple[int, int], ...]
    """[start, end) sample spans of speech in ``samples``."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speech_seconds(self) -> float:
        return sum(b - a for a, b in self.speech) / SAMPLE_RATE


def parse_references(names: Sequence[str], references: Sequence[str], scratch: Optional[Path] = None,
                     cancelled: Optional[threading.Event] = None) -> list[Reference]:
    """The known speakers of a request, checked and decoded; [] when neither field is given.

    ``names``, ``references``: the form's ``known_speaker_names[]`` and
    ``known_speaker_references[]`` in order. ``scratch``: a folder to decode
    in (the request's; a temporary folder inside it is removed after). Raises
    ``InvalidParameterError`` with ``param`` set to the field to blame and the
    item's index in the message; ``ServiceFaultError`` (the decoder failed on
    our side) and ``CancelledError`` (``cancelled`` was set) as the decoder does.
    Cheap checks (counts, names, sizes, base64) run on every item before any clip is decoded.
    """
    names, references = list(names), list(references)
    _check_counts(names, references)
    names = _check_names(names)
    clips = [_clip_bytes(i, url) for i, url in enumerate(references)]
    if not clips:
        return []
    out = []
    with tempfile.TemporaryDirectory(dir=scratch, prefix="known-") as tmp:
        for i, (name, clip) in enumerate(zip(names, clips)):
            samples = _decode(i, clip, Path(tmp), cancelled)
            out.append(Reference(name, samples, _speech(i, samples)))
    return out


def name_speakers(turns: Sequence[SpeakerTurn], read: Callable[[int, int], np.ndarray],
                  references: Sequence[Reference], embedder) -> dict[int, str]:
    """{speaker: name} of the request's speakers that a reference matches (one to one, at ``THRESHOLD`` or above).

    ``turns``: the diarization's; ``read(start, end)``: the request's 16 kHz
    float32 samples [start, end) (``AudioFile.read``); ``embedder``: a
    ``CamPlusPlus``. Speakers not in the result keep their ``SPEAKER_nn`` label.
    """
    scores, speakers = similarities(turns, read, references, embedder)
    if not speakers or not references:
        return {}
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(scores, maximize=True)
    return {speakers[r]: references[c].name for r, c in zip(rows, cols) if scores[r, c] >= THRESHOLD}


def similarities(turns: Sequence[SpeakerTurn], read: Callable[[int, int], np.ndarray],
                 references: Sequence[Reference], embedder) -> tuple[np.ndarray, list[int]]:
    """(cosine similarity of each speaker's centroid to each reference, speakers x references; the speakers)."""
    speakers = sorted({t.speaker for t in turns})
    if not speakers or not references:
        return np.zeros((len(speakers), len(references)), np.float32), speakers
    centroids = np.stack([_centroid(embedder.embed(speaker_windows(turns, s, read))) for s in speakers])
    clips = np.stack([reference_embedding(r, embedder) for r in references])
    return centroids @ clips.T, speakers


def reference_embedding(reference: Reference, embedder) -> np.ndarray:
    """The clip's voice: its speech's 1.5 s windows (every 0.75 s) embedded and averaged, unit length."""
    return _centroid(embedder.embed(reference_windows(reference)))


def reference_windows(reference: Reference) -> list[np.ndarray]:
    spans = [w for a, b in reference.speech for w in windows(_Span(a, b))]
    usable = [(a, b) for a, b in spans if b - a >= MIN_USABLE] or spans  # a region too short alone is filled
    return [reference.samples[a:b] for a, b in usable]


def speaker_windows(turns: Sequence[SpeakerTurn], speaker: int,
                    read: Callable[[int, int], np.ndarray]) -> list[np.ndarray]:
    """Up to ``MAX_SPEAKER_WINDOWS`` windows of ``speaker``'s audio, spread evenly over its turns.

    Whole 1.5 s windows inside its turns where it has any (a turn's edges
    are where voices change, so they are avoided by cutting windows from
    within turns of at least a window); else its longest turns whole (the
    embedder repeats a short one to fill a window).
    """
    spans = []
    for t in turns:
        if t.speaker != speaker:
            continue
        start, end = round(t.start * SAMPLE_RATE), round(t.end * SAMPLE_RATE)
        count = (end - start) // WINDOW
        skip = (end - start - count * WINDOW) // 2  # the windows centred in the turn
        spans += [(start + skip + k * WINDOW, start + skip + (k + 1) * WINDOW) for k in range(count)]
    if not spans:
        ranked = sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start - t.end)
        spans = [(round(t.start * SAMPLE_RATE), round(t.end * SAMPLE_RATE)) for t in ranked[:MAX_SPEAKER_WINDOWS]]
    if len(spans) > MAX_SPEAKER_WINDOWS:
        spans = [spans[i] for i in np.linspace(0, len(spans) - 1, MAX_SPEAKER_WINDOWS).round().astype(int)]
    out = [read(a, b) for a, b in spans]
    return [w for w in out if len(w)] or [np.zeros(WINDOW, np.float32)]


# --- checks ----------------------------------------------------------------------------------------


def _item(field: str, i: int) -> str:
    """``known_speaker_names[2]``: the field's item, as the error names it."""
    return f"{field[:-2]}[{i}]"


def _check_counts(names: list, references: list) -> None:
    for field, items in ((NAMES, names), (REFERENCES, references)):
        if len(items) > MAX_REFERENCES:
            raise InvalidParameterError(f"{field} has {len(items)} items; at most {MAX_REFERENCES} known speakers "
                                        f"are supported", param=field)
    if len(names) != len(references):
        short = REFERENCES if len(references) < len(names) else NAMES
        raise InvalidParameterError(f"{len(names)} {NAMES} and {len(references)} {REFERENCES} were given; each "
                                    f"name needs one reference clip, in the same order", param=short)


def _check_names(names: list) -> list[str]:
    out: list[str] = []
    for i, raw in enumerate(names):
        where = _item(NAMES, i)
        name = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(f"{where} is empty; give each known speaker a name", param=NAMES)
        if len(name) > MAX_NAME_CHARS:
            raise InvalidParameterError(f"{where} is {len(name)} characters long; at most {MAX_NAME_CHARS}",
                                        param=NAMES)
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise InvalidParameterError(f"{where} holds control characters (a line break?)", param=NAMES)
        if _LABEL.fullmatch(name):
            raise InvalidParameterError(f"{where} is {name!r}, which reads as the label of an unnamed speaker; "
                                        f"choose another name", param=NAMES)
        if name in out:
            raise InvalidParameterError(f"{where} repeats {_item(NAMES, out.index(name))} ({name!r}); names must be "
                                        f"unique", param=NAMES)
        out.append(name)
    return out


_DATA = re.compile(r"data:", re.IGNORECASE)


def _clip_bytes(i: int, url) -> bytes:
    """The clip's file from its data URL: ``data:[<media type>][;<parameter>...];base64,<data>``."""
    where = _item(REFERENCES, i)

    def bad(why: str) -> InvalidParameterError:
        return InvalidParameterError(f"{where} {why}", param=REFERENCES)

    if not isinstance(url, str) or not url.strip():
        raise bad("is empty; send the clip as a data URL: data:audio/wav;base64,<the file in base64>")
    if len(url) > MAX_REFERENCE_CHARS:
        raise bad(f"is {len(url):,} characters long; a clip may be at most {MAX_REFERENCE_BYTES:,} bytes "
                  f"({MAX_REFERENCE_CHARS:,} characters as a data URL)")
    url = url.strip()
    if not _DATA.match(url):
        raise bad("is not a data URL; send the clip as data:audio/wav;base64,<the file in base64> "
                  "(any audio format the file field takes)")
    comma = url.find(",", 0, 1024)
    if comma < 0:
        raise bad("is not a data URL: no ',' ends its header (data:<media type>;base64,<data>)")
    header = url[5:comma].split(";")
    if header[-1].strip().lower() != "base64":
        raise bad(f"is not in base64 (its header is {url[:comma][:60]!r}); send data:<media type>;base64,<data>")
    try:
        data = base64.b64decode("".join(url[comma + 1:].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"is not valid base64 ({exc})") from None
    if not data:
        raise bad("holds no data after 'base64,'")
    if len(data) > MAX_REFERENCE_BYTES:
        raise bad(f"is {len(data):,} bytes; a clip may be at most {MAX_REFERENCE_BYTES:,} bytes "
                  f"(it need only be {MIN_SECONDS:g}-{MAX_SECONDS:g} s)")
    return data


def _decode(i: int, clip: bytes, folder: Path, cancelled: Optional[threading.Event]) -> np.ndarray:
    from ..core.audio import AudioFile, decode_to_file

    where = _item(REFERENCES, i)
    source, pcm = folder / f"reference-{i}", folder / f"reference-{i}.pcm"
    source.write_bytes(clip)
    try:
        audio = decode_to_file(source, AudioFile(pcm), max_seconds=MAX_SECONDS + TOLERANCE_S, cancelled=cancelled)
    except AudioDecodeError as exc:
        raise InvalidParameterError(f"{where} is not audio that can be decoded: {exc.message}",
                                    param=REFERENCES) from None
    except PayloadTooLargeError:
        raise InvalidParameterError(f"{where} is longer than {MAX_SECONDS:g} s; a reference clip must be "
                                    f"{MIN_SECONDS:g}-{MAX_SECONDS:g} s", param=REFERENCES) from None
    finally:
        source.unlink(missing_ok=True)
    samples = audio.read(0, audio.samples)
    pcm.unlink(missing_ok=True)
    if audio.seconds < MIN_SECONDS - TOLERANCE_S:
        raise InvalidParameterError(f"{where} is {audio.seconds:.2f} s long; a reference clip must be "
                                    f"{MIN_SECONDS:g}-{MAX_SECONDS:g} s", param=REFERENCES)
    return samples


def _speech(i: int, samples: np.ndarray) -> tuple[tuple[int, int], ...]:
    finder = SpeechRegions()
    found = finder.feed(samples) + finder.finish()
    spans = tuple((r.start, r.end) for r in found)
    heard = sum(b - a for a, b in spans) / SAMPLE_RATE
    if heard < MIN_SPEECH_S:
        raise InvalidParameterError(f"{_item(REFERENCES, i)} holds {heard:.1f} s of speech; a reference clip needs "
                                    f"at least {MIN_SPEECH_S:g} s of the speaker talking", param=REFERENCES)
    return spans


@dataclass(frozen=True)
class _Span:
    """What ``windows`` reads of a region: its start and end."""

    start: int
    end: int


def _centroid(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-9)
