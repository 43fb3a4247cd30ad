"""Known speakers: OpenAI's names and reference clips checked, decoded, and matched to the request's voices."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from serve.diarization import Diarizer, SpeakerTurn, known
from serve.diarization.embedding import WINDOW
from serve.diarization.known import NAMES, REFERENCES, Reference, name_speakers, parse_references
from serve.errors import InvalidParameterError
from tests import speech
from tests.conversations import VOICES, conversation

RATE = 16000


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buf.getvalue()


def url(data: bytes, media: str = "audio/wav") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def talking() -> np.ndarray:
    """About 12 s of one espeak voice, to cut clips of any length from."""
    text = " ".join(speech.story_sentences(4, seed=41))
    return speech.load_pcm(speech.speak(text, "en-us").path)


def clip(talking: np.ndarray, seconds: float) -> str:
    return url(wav(talking[: int(seconds * RATE)]))


def refused(names, references, param, *said, **kwargs) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as info:
        parse_references(names, references, **kwargs)
    assert info.value.param == param, info.value.message
    for words in said:
        assert words in info.value.message, info.value.message
    return info.value


# --- the fields -----------------------------------------------------------------------------------


def test_no_known_speakers():
    assert parse_references([], []) == []


def test_counts_must_match_and_stay_within_openais_four():
    assert known.MAX_REFERENCES == 4  # OpenAI's "Up to 4 speakers are supported"
    ok = "data:audio/wav;base64,AAAA"  # never decoded: the counts are checked first
    refused(["a", "b"], [ok], REFERENCES, "2 known_speaker_names[] and 1 known_speaker_references[]")
    refused(["a"], [ok, ok], NAMES)
    refused(list("abcde"), [ok] * 5, NAMES, "5 items", "at most 4")
    refused(list("abcd"), [ok] * 5, REFERENCES, "5 items")


@pytest.mark.parametrize("names, said", [
    (["ann", ""], "known_speaker_names[1] is empty"),
    (["ann", "   "], "known_speaker_names[1] is empty"),
    (["ann", "x" * 101], "known_speaker_names[1] is 101 characters"),
    (["ann", "bo\nb"], "known_speaker_names[1] holds control characters"),
    (["ann", "SPEAKER_01"], "reads as the label of an unnamed speaker"),
    (["ann", " ann "], "known_speaker_names[1] repeats known_speaker_names[0]"),
])
def test_bad_names_are_refused_by_index(names, said):
    refused(names, ["data:audio/wav;base64,AAAA"] * 2, NAMES, said)


@pytest.mark.parametrize("reference, said", [
    ("", "[1] is empty"),
    (base64.b64encode(b"RIFF....WAVEfmt ").decode(), "[1] is not a data URL"),  # bare base64: refused, not guessed
    ("https://example.com/ann.wav", "[1] is not a data URL"),
    ("data:audio/wav;base64", "no ','"),
    ("data:audio/wav,RIFF%20WAVE", "[1] is not in base64"),
    ("data:audio/wav;base64,not*base64!", "[1] is not valid base64"),
    ("data:audio/wav;base64,QUJDRA", "[1] is not valid base64"),  # padding missing
    ("data:audio/wav;base64,", "[1] holds no data"),
])
def test_bad_data_urls_are_refused_by_index(talking, reference, said):
    refused(["ann", "bob"], [clip(talking, 3.0), reference], REFERENCES, said)


def test_size_limits_are_enforced_before_decoding():
    over_chars = "data:audio/wav;base64," + "A" * known.MAX_REFERENCE_CHARS
    refused(["ann"], [over_chars], REFERENCES, "[0] is", "characters long")
    over_bytes = url(bytes(known.MAX_REFERENCE_BYTES + 1))  # in base64 it is still under the character limit
    assert len(over_bytes) <= known.MAX_REFERENCE_CHARS
    refused(["ann"], [over_bytes], REFERENCES, "[0] is 4,194,305 bytes")
    # the character bound leaves room for the byte bound in base64, wrapped in 76-character lines
    assert -(-known.MAX_REFERENCE_BYTES // 3) * 4 * 78 / 76 + 256 <= known.MAX_REFERENCE_CHARS


def test_what_ffmpeg_cannot_decode_is_not_audio(talking):
    noise = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    refused(["ann", "bob"], [clip(talking, 3.0), url(noise)], REFERENCES,
            "known_speaker_references[1] is not audio that can be decoded")


def test_clips_must_be_2_to_10_seconds(talking, tmp_path):
    assert (known.MIN_SECONDS, known.MAX_SECONDS) == (2.0, 10.0)  # OpenAI's "between 2 and 10 seconds"
    refused(["ann"], [clip(talking, 1.85)], REFERENCES, "[0] is 1.85 s long", "2-10 s")
    refused(["ann"], [clip(talking, 10.25)], REFERENCES, "[0] is longer than 10 s")
    # at the limits (and within the codecs' tolerance) they pass
    refs = parse_references(["short", "long", "padded"],
                            [clip(talking, 2.0), clip(talking, 10.0), clip(talking, 1.95)], scratch=tmp_path)
    assert [round(r.seconds, 2) for r in refs] == [2.0, 10.0, 1.95]
    assert list(tmp_path.iterdir()) == []  # the clips' files are gone


def test_a_clip_without_speech_is_refused(talking):
    silence = np.zeros(3 * RATE, np.float32)
    refused(["ann"], [url(wav(silence))], REFERENCES, "[0] holds 0.0 s of speech")
    mostly = np.concatenate([talking[: int(0.5 * RATE)], silence])  # half a second: too little to know a voice
    refused(["ann"], [url(wav(mostly))], REFERENCES, "of speech", "at least 1 s")


def test_any_format_decodes_whatever_the_media_type_says():
    """ffmpeg sniffs the bytes: mimetypes' video/webm and the octet-stream fallback of clients decode too;
    base64 wrapped in lines (what the base64 tool prints) is taken."""
    sentence = speech.story_sentences(1, seed=43)[0]
    made = {fmt: speech.speak(sentence, "en-gb", fmt=fmt).path.read_bytes() for fmt in ("mp3", "webm", "m4a")}
    wrapped = base64.encodebytes(made["m4a"]).decode()
    assert "\n" in wrapped
    refs = parse_references(["ann", "bob", "cy"], [url(made["mp3"], "audio/mpeg"), url(made["webm"], "video/webm"),
                                                   "data:application/octet-stream;base64," + wrapped])
    assert [r.name for r in refs] == ["ann", "bob", "cy"]
    assert all(2.0 < r.seconds < 6.0 and r.speech_seconds > 1.0 for r in refs)
    assert all(r.samples.dtype == np.float32 and np.abs(r.samples).max() > 0.1 for r in refs)


# --- matching: the logic, with a stand-in embedder ---------------------------------------------------


class Voices:
    """An embedder whose windows are constant signals: the value is the voice, each voice a fixed unit vector."""

    def __init__(self, vectors: dict[int, list[float]]):
        self.vectors = {v: np.array(x, np.float32) / np.linalg.norm(x) for v, x in vectors.items()}
        self.windows = 0

    def embed(self, windows):
        self.windows += len(windows)
        return np.stack([self.vectors[int(round(float(w[0]) * 10))] for w in windows])


def voiced(value: int, seconds: float = 3.0) -> np.ndarray:
    return np.full(int(seconds * RATE), value / 10, np.float32)


def reference(name: str, value: int) -> Reference:
    return Reference(name, voiced(value), ((0, 3 * RATE),))


def test_one_to_one_and_only_above_the_threshold(monkeypatch):
    monkeypatch.setattr(known, "THRESHOLD", 0.75)
    # voices 1 and 2 are the request's; 3 is near voice 1 (cos 0.8) and 4 near nobody (cos 0.6 with 1)
    embedder = Voices({1: [1, 0, 0], 2: [0, 1, 0], 3: [0.8, 0, 0.6], 4: [0.6, 0, 0.8]})
    audio = np.concatenate([voiced(1, 4.0), voiced(2, 4.0)])
    turns = [SpeakerTurn(0.0, 4.0, 0), SpeakerTurn(4.0, 8.0, 1)]

    def named(*refs):
        return name_speakers(turns, lambda a, b: audio[a:b], list(refs), embedder)

    assert named(reference("ann", 1), reference("bob", 2)) == {0: "ann", 1: "bob"}
    assert named(reference("bob", 2), reference("near ann", 3), reference("ann", 1)) == {0: "ann", 1: "bob"}
    assert named(reference("near ann", 3)) == {0: "near ann"}  # 0.8: over the threshold, no better one given
    assert named(reference("far", 4)) == {}  # 0.6: under it
    monkeypatch.setattr(known, "THRESHOLD", 0.85)
    assert named(reference("near ann", 3), reference("bob", 2)) == {1: "bob"}
    assert name_speakers([], lambda a, b: audio[a:b], [reference("ann", 1)], embedder) == {}
    assert named() == {}


def test_a_speakers_windows_are_bounded_and_inside_its_turns():
    audio = np.concatenate([voiced(1, 60.0), voiced(2, 3.0), voiced(1, 0.5)])
    turns = [SpeakerTurn(0.0, 60.0, 0), SpeakerTurn(60.0, 63.0, 1), SpeakerTurn(63.0, 63.5, 0)]
    spans = []

    def read(a, b):
        spans.append((a, b))
        return audio[a:b]

    windows = known.speaker_windows(turns, 0, read)
    assert len(windows) == known.MAX_SPEAKER_WINDOWS < 60 / 1.5
    assert all(len(w) == WINDOW and w[0] == np.float32(0.1) for w in windows)  # whole windows, all speaker 0's audio
    assert spans[0][0] < 2 * WINDOW and spans[-1][1] > 58 * RATE  # spread over the turn, not its start
    # only turns shorter than a window: the longest whole
    short = [SpeakerTurn(0.0, 0.5, 0), SpeakerTurn(1.0, 2.2, 0), SpeakerTurn(2.2, 3.0, 1)]
    assert [len(w) for w in known.speaker_windows(short, 0, read)] == [int(1.2 * RATE), int(0.5 * RATE)]


# --- matching: the real model, espeak voices ----------------------------------------------------------


@pytest.fixture(scope="module")
def meeting(embedder):
    """A 3-voice conversation (the one test_diarizer scores), diarized, with each speaker's true voice."""
    recording = conversation(3, 90, seed=12)
    audio = speech.load_pcm(recording.path)
    diarizer = Diarizer(embedder)
    diarizer.feed(audio)
    turns = diarizer.finish()
    voice = {}
    for speaker in {t.speaker for t in turns}:
        overlap = np.zeros(len(VOICES))
        for t in (t for t in turns if t.speaker == speaker):
            for a, b, label in recording.turns:
                overlap[int(label[3:])] += max(0.0, min(b, t.end) - max(a, t.start))
        voice[speaker] = int(overlap.argmax())
    assert sorted(voice.values()) == [0, 1, 2], voice  # the diarization's own tests bound its errors
    said = " ".join(text for _, text in recording.texts)
    fresh = [s for s in speech.story_sentences(60, seed=97) if s not in said]
    return audio, turns, voice, fresh


def voice_reference(v: int, sentence: str) -> str:
    name, pitch, rate = VOICES[v]
    return url(speech.speak(sentence, name, speed=rate, pitch=pitch).path.read_bytes())


def test_speakers_are_named_by_references_of_other_sentences(embedder, meeting):
    audio, turns, voice, fresh = meeting
    names = {0: "ann", 1: "bob", 2: "cy"}
    order = [2, 0, 1]  # not the order the voices speak in
    refs = parse_references([names[v] for v in order], [voice_reference(v, fresh[i]) for i, v in enumerate(order)])
    got = name_speakers(turns, lambda a, b: audio[a:b], refs, embedder)
    assert got == {speaker: names[v] for speaker, v in voice.items()}


def test_a_voice_not_in_the_audio_names_nobody(embedder, meeting):
    """VOICES[3] never speaks here: alone, it names no one; beside a present voice, only that one is named."""
    audio, turns, voice, fresh = meeting
    absent = voice_reference(3, fresh[3])
    refs = parse_references(["dee"], [absent])
    assert name_speakers(turns, lambda a, b: audio[a:b], refs, embedder) == {}
    refs = parse_references(["dee", "bob"], [absent, voice_reference(1, fresh[4])])
    assert name_speakers(turns, lambda a, b: audio[a:b], refs, embedder) == \
        {speaker: "bob" for speaker, v in voice.items() if v == 1}
