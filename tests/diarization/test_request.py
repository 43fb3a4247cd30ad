"""One request's diarization beside its transcription (serve/diarization/request.py), with faults injected.

A real ``Job`` whose audio ffmpeg decodes into its scratch folder, and stand-in
engines that record what they were fed, fail, or block: what the request gets
(turns, a 503, a timeout) and that the job's files are held exactly while read.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serve.core.audio import decode_to_file
from serve.core.job import Job
from serve.core.options import BUILT_IN, Capabilities, SpeakerCounts, TranscribeOptions, resolve
from serve.core.results import Segment, Transcription, Word
from serve.core.segments import windows
from serve.diarization.diarizer import SpeakerTurn
from serve.diarization.engine import DiarizationEngine, choose, speaker_model
from serve.diarization.regions import PAD_MS
from serve.diarization.request import Diarizing, labelled
from serve.errors import InvalidParameterError, RequestTimeoutError, ServiceFaultError
from tests import speech

CAPS = Capabilities("ctranslate2", "tiny.en", True, {n: None for n in TranscribeOptions.names()}, {})


class Recording:
    """A stream that keeps what it is fed; ``fail`` raises at the end, ``gate`` holds ``finish``."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None):
        self.fed: list[np.ndarray] = []
        self.regions: list[tuple[int, np.ndarray]] = []
        self.fail = fail
        self.gate = gate
        self.finished = False

    def feed(self, samples):
        self.fed.append(samples)

    def speech(self, start, samples):
        self.regions.append((start, samples))

    def finish(self):
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail:
            raise RuntimeError("the embedder ran out of memory")
        self.finished = True
        return [SpeakerTurn(0.0, 1.0, 0), SpeakerTurn(1.0, 2.0, 1)]


class Engine(DiarizationEngine):
    name = "stand-in"

    def __init__(self, stream, reads_speech: bool = False):
        self._stream = stream
        self.reads_speech = reads_speech

    def stream(self, counts):
        return self._stream


def job_of(tmp_path, clip, speech: bool = False) -> Job:
    options = resolve(TranscribeOptions(diarize=True), TranscribeOptions(), CAPS)
    job = Job(clip.path, tmp_path, options, speech=speech)
    return job


def cut(job: Job) -> list[tuple[int, int]]:
    """What the scheduler's cutter does for the job: its windows, its VAD's regions handed on; the regions."""
    found: list[tuple[int, int]] = []

    def hand_on(regions):
        found.extend(regions)
        job.speech.add(regions)
    try:
        list(windows(job.audio, job.options, speech=hand_on))
    finally:
        job.speech.close()
    return found


@pytest.fixture(scope="module")
def clip():
    return speech.speak(" ".join(speech.SENTENCES[:4]))


def test_the_whole_audio_is_fed_as_it_is_decoded_then_turns_come_back(tmp_path, clip):
    job = job_of(tmp_path, clip)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream), SpeakerCounts())
    decode_to_file(clip.path, job.audio)
    turns, names = diarizing.result(timeout=60)
    assert [t.speaker for t in turns] == [0, 1] and names == {}
    fed = np.concatenate(stream.fed)
    assert len(fed) == job.audio.samples and np.array_equal(fed, job.audio.read(0, job.audio.samples))


def test_with_the_transcriptions_vad_only_its_speech_is_read_padded_a_little(tmp_path):
    """The VAD runs once: the diarization reads the regions the cutter's VAD found, each padded by 60 ms
    but never past the middle of a pause, in order, each the audio's own samples, and never the whole audio."""
    clip = speech.long_clip(0.5)
    job = job_of(tmp_path, clip, speech=True)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream, reads_speech=True), SpeakerCounts())
    assert diarizing.vad == "shared"
    decode_to_file(clip.path, job.audio)
    found = cut(job)
    diarizing.result(timeout=60)
    assert stream.fed == [] and len(stream.regions) == len(found) > 5
    spans = [(start, start + len(samples)) for start, samples in stream.regions]
    padding = PAD_MS * 16
    for (a, b), (c, d) in zip(spans, found):
        assert a <= c and d <= b and c - a <= padding and b - d <= padding
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:])), "no audio is read twice"
    assert [(a, b) for a, b in spans[1:-1]] == [(c - padding, d + padding) for c, d in found[1:-1]]  # pauses > 120 ms
    assert all(np.array_equal(samples, job.audio.read(start, start + len(samples)))
               for start, samples in stream.regions)


def test_a_pause_shorter_than_two_paddings_is_shared_at_its_middle(tmp_path, clip):
    job = job_of(tmp_path, clip, speech=True)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream, reads_speech=True), SpeakerCounts())
    decode_to_file(clip.path, job.audio)
    end = job.audio.samples
    job.speech.add([(500, 16000), (17000, 30000)])  # 1000 samples apart: less than 2 x 960
    job.speech.add([(40000, end - 100)])
    job.speech.close()
    diarizing.result(timeout=60)
    assert [(a, a + len(x)) for a, x in stream.regions] == [(0, 16500), (16500, 30960), (39040, end)]


def test_without_the_vad_the_engine_finds_its_own_speech(tmp_path, clip):
    job = Job(clip.path, tmp_path, resolve(TranscribeOptions(diarize=True, vad_filter=False), TranscribeOptions(),
                                           CAPS), speech=True)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream, reads_speech=True), SpeakerCounts())
    assert job.speech is None and diarizing.vad == "own"
    decode_to_file(clip.path, job.audio)
    diarizing.result(timeout=60)
    assert stream.regions == [] and sum(len(f) for f in stream.fed) == job.audio.samples


def test_a_cutter_that_never_finishes_does_not_hold_a_cancelled_diarization(tmp_path, clip):
    """A fault: the VAD's regions stop coming and the cutter never closes them. Cancelling the job (the
    client left, the deadline passed) still ends the diarization, with no turns."""
    job = job_of(tmp_path, clip, speech=True)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream, reads_speech=True), SpeakerCounts())
    decode_to_file(clip.path, job.audio)
    job.speech.add([(1600, 16000)])
    time.sleep(0.3)
    job.cancelled.set()
    with pytest.raises(ServiceFaultError, match="stopped before the end"):
        diarizing.result(timeout=10)
    assert not stream.finished and stream.regions == []  # the region waited for its neighbour, in vain


def test_a_failing_diarization_is_a_503_never_a_transcript_without_speakers(tmp_path, clip):
    job = job_of(tmp_path, clip)
    diarizing = Diarizing(job, Engine(Recording(fail=True)), SpeakerCounts())
    decode_to_file(clip.path, job.audio)
    with pytest.raises(ServiceFaultError, match="speaker diarization failed: the embedder ran out of memory"):
        diarizing.result(timeout=60)


def test_the_job_files_are_held_while_read_and_let_go_after(tmp_path, clip):
    job = job_of(tmp_path, clip)
    gate = threading.Event()
    diarizing = Diarizing(job, Engine(Recording(gate=gate)), SpeakerCounts())
    decode_to_file(clip.path, job.audio)
    removed = threading.Event()
    job.release(removed.set)  # the reader is done; the diarization still reads
    assert not removed.wait(0.3), "the files went while the diarization still needed them"
    gate.set()
    diarizing.result(timeout=60)
    assert removed.wait(5)


def test_a_cancelled_job_stops_the_reading_and_gives_no_turns(tmp_path, clip):
    job = job_of(tmp_path, clip)
    stream = Recording()
    diarizing = Diarizing(job, Engine(stream), SpeakerCounts())
    job.cancelled.set()  # before any audio: ffmpeg never writes
    with pytest.raises(ServiceFaultError, match="stopped before the end"):
        diarizing.result(timeout=10)
    assert not stream.finished


def test_waiting_past_the_deadline_is_a_timeout_and_polls_the_client(tmp_path, clip):
    job = job_of(tmp_path, clip)
    diarizing = Diarizing(job, Engine(Recording()), SpeakerCounts())  # no audio comes: it waits
    polls = []
    with pytest.raises(RequestTimeoutError):
        diarizing.result(timeout=1.2, poll=lambda: polls.append(time.monotonic()))
    assert polls, "the client was never checked while waiting"
    diarizing.cancel()


def test_labelled_splits_segments_at_speaker_changes_and_hides_words_not_asked_for():
    words = (Word(0.0, 0.5, " Hello"), Word(0.5, 0.9, " there."), Word(1.2, 1.6, " Hi"), Word(1.6, 1.9, " you."))
    t = Transcription(" Hello there. Hi you.", "en", 2.0, (Segment(0, 0.0, 1.9, " Hello there. Hi you.", words=words),))
    turns = [SpeakerTurn(0.0, 1.0, 0), SpeakerTurn(1.0, 2.0, 1)]
    out = labelled(t, turns, hide_words=True)
    assert [(s.text, s.speaker, s.words) for s in out.segments] == \
        [(" Hello there.", "SPEAKER_00", None), (" Hi you.", "SPEAKER_01", None)]
    assert [(s.speaker, s.speaking_time) for s in out.speakers] == [("SPEAKER_00", 1.0), ("SPEAKER_01", 1.0)]
    named = labelled(t, turns, {1: "Ada"})
    assert [s.speaker for s in named.segments] == ["SPEAKER_00", "Ada"] and named.segments[1].words[0].speaker == "Ada"
    assert labelled(Transcription("", "en", 2.0, ()), []).speakers == ()


def test_diarize_decodes_words_to_split_segments_and_says_to_hide_them():
    o = resolve(TranscribeOptions(diarize=True, min_speakers=2), TranscribeOptions(), CAPS)
    assert o.speakers == SpeakerCounts(low=2) and o.decode.word_timestamps and o.hide_words
    asked = resolve(TranscribeOptions(diarize=True, word_timestamps=True), TranscribeOptions(), CAPS)
    assert asked.decode.word_timestamps and not asked.hide_words
    assert resolve(TranscribeOptions(), TranscribeOptions(), CAPS).speakers is None


def test_speaker_counts_from_the_defaults_follow_the_default_diarize():
    defaults = TranscribeOptions(diarize=True, num_speakers=2)
    assert resolve(TranscribeOptions(), defaults, CAPS).speakers == SpeakerCounts(num=2)
    assert resolve(TranscribeOptions(diarize=False), defaults, CAPS).speakers is None  # a live pass, say
    with pytest.raises(InvalidParameterError, match="num_speakers needs diarize=true"):
        resolve(TranscribeOptions(), TranscribeOptions(num_speakers=2), CAPS)  # a server that would never use it
    assert BUILT_IN.diarize is False


def test_choosing_an_engine_says_what_to_add_when_there_is_none(tmp_path, monkeypatch):
    engine, reason = choose("off", tmp_path, "cpu")
    assert engine is None and "WHISPER_DIARIZATION=off" in reason
    engine, reason = choose("auto", tmp_path, "cpu")
    assert engine is not None and engine.name == "embedded" and reason is None
    monkeypatch.setattr("serve.diarization.engine.embedded_available", lambda: "the embedded model is missing")
    engine, reason = choose("auto", tmp_path, "cpu")
    assert engine is None and "the embedded model is missing" in reason and "diarization/" in reason


def test_the_speaker_model_takes_the_engines_threads_on_a_cpu(tmp_path):
    """Every core, as the engine has: the two take turns at the CPU (serve/core/cpu_turns.py)."""
    assert speaker_model("cpu", tmp_path, 8) == ("cpu", tmp_path, 8)
    assert speaker_model("cuda:0", tmp_path, 8) == ("cuda:0", tmp_path, None)
    engine, _ = choose("embedded", tmp_path, *speaker_model("cpu", tmp_path, 8))
    assert (engine.device, engine.cache_dir, engine.threads) == ("cpu", tmp_path, 8)
