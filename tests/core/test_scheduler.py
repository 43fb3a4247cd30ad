"""The scheduler on the real tiny.en: batched equals one by one, options stay per request, fairness, cancel.

Timings are never asserted: the fairness bound is counted in engine calls.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from serve.backends.base import Device
from serve.core.options import DecodeOptions
from serve.core.segments import windows
from serve.errors import CancelledError
from tests import speech
from tests.conftest import BACKEND_NAMES, MODEL_CACHE
from tests.core.injection import Gate, Wrapped, wait_until


def _together(engine, clips, tmp_path: Path, options: list[dict] | None = None):
    """Submit all at once (so they share engine calls); the transcriptions in order."""
    options = options or [{} for _ in clips]
    jobs = []
    for i, (clip, opts) in enumerate(zip(clips, options)):
        scratch = tmp_path / f"job{i}"
        scratch.mkdir()
        jobs.append(engine.submit(clip.path, scratch, **opts))
    return [job.wait(600) for job in jobs]


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_batched_equals_one_by_one_for_greedy(named_engine, corpus, tmp_path, name):
    """Stacked windows (no packing) decode exactly as each alone: same text, same timestamps."""
    engine = named_engine(name, WHISPER_PACKING="off")
    alone = [engine.transcribe(clip.path) for clip in corpus]
    before = engine.scheduler.calls
    together = _together(engine, corpus, tmp_path)
    assert engine.scheduler.calls - before <= len(corpus) // 2, "the clips were not batched"
    for clip, a, b in zip(corpus, alone, together):
        assert a.text == b.text, clip.text
        assert [(s.start, s.end) for s in a.segments] == [(s.start, s.end) for s in b.segments]


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_packed_clips_keep_their_own_words_and_scores(named_engine, corpus, tmp_path, name):
    """Packing several requests into one 30 s window (opt-in, WHISPER_PACKING=on).

    A packed clip is decoded with its neighbours' text as context, so its
    transcript may differ from the one it gets alone (measured: 7-8 of the 16
    clips differ, corpus WER 0.17-0.19 packed vs 0.18-0.19 alone). What must
    hold: no request gets words that only its neighbours said, each gets
    scores from its own tokens (no_speech_prob, a whole window's, is not any
    one request's: null), and accuracy stays within the corpus bound.
    """
    engine = named_engine(name, WHISPER_PACKING="on")
    before = engine.scheduler.calls
    results = _together(engine, corpus, tmp_path)
    assert engine.scheduler.calls - before <= 4, "16 short clips should share a few packed engine calls"
    refs = [clip.text for clip in corpus]
    assert speech.wer(refs, [r.text for r in results]) <= speech.MAX_SET_WER
    _assert_no_cross_talk(refs, results)
    for i, result in enumerate(results):
        assert result.duration == pytest.approx(speech.duration(corpus[i].path), abs=0.05)
        assert all(0 <= s.start <= s.end <= result.duration + 0.05 for s in result.segments)
    packed = [r for r in results if r.segments and r.segments[0].no_speech_prob is None]
    assert len(packed) >= len(results) // 2, "most clips should keep their packed decode"
    own = [(r.segments[0].avg_logprob, r.segments[0].compression_ratio) for r in packed]
    assert len(set(own)) == len(own), "packed requests share scores: they are the pack's, not their own"
    assert all(s.avg_logprob < 0 for r in packed for s in r.segments)


def test_packing_never_mixes_requests_over_many_voices(named_engine, tmp_path):
    """36 requests (18 sentences, each in two of the six voices), all packed together: no text holds a
    three-word run of another request's sentence that its own sentence lacks."""
    clips = [speech.speak(text, speech.VOICES[(i + shift) % len(speech.VOICES)])
             for shift in (0, 3) for i, text in enumerate(speech.SENTENCES)]
    engine = named_engine("ctranslate2", WHISPER_PACKING="on", WHISPER_MAX_BATCH="8")
    results = _together(engine, clips, tmp_path)
    _assert_no_cross_talk([c.text for c in clips], results)
    assert speech.wer([c.text for c in clips], [r.text for r in results]) <= speech.MAX_SET_WER


def _assert_no_cross_talk(refs: list[str], results) -> None:
    for i, result in enumerate(results):
        # a neighbour's words in this transcript would come as a phrase (a segment given to the wrong request)
        own = _trigrams(refs[i])
        others = set().union(*(_trigrams(r) for j, r in enumerate(refs) if j != i)) - own
        leaked = _trigrams(result.text) & others
        assert not leaked, f"{refs[i]!r} got its neighbours' words {leaked}: {result.text!r}"


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = speech.normalize(text).split()
    return set(zip(words, words[1:], words[2:]))


def test_concurrent_requests_get_their_own_options(named_engine, corpus, tmp_path):
    engine = named_engine("ctranslate2")
    options = [{"word_timestamps": True}, {"initial_prompt": "Stella, Stella."}, {}, {"chunk_length_s": 5},
               {"vad_filter": False}, {"beam_size": 2}]
    clips = [corpus[1]] * len(options)
    together = _together(engine, clips, tmp_path, options)
    alone = [engine.transcribe(clip.path, **opts) for clip, opts in zip(clips, options)]
    for opts, a, b in zip(options, alone, together):
        assert a.text == b.text, opts
    assert together[0].words and all(r.words is None for r in together[1:])
    assert "Stella" in together[1].text


PROMPTS = ["Stella, Stella.", "Sea, sea, sea.", None]


def _prompted_together(r, gate, clip) -> tuple[list, int]:
    """``clip`` three times with the three ``PROMPTS``, queued while a first request holds the engine;
    their results, and the index of the first engine call after the one held."""
    blocker = r.submit(speech.corpus(16)[8].path)
    gate.wait_entered()
    held = len(r.engine.calls)
    jobs = [r.submit(clip.path, **({"initial_prompt": p} if p else {})) for p in PROMPTS]
    wait_until(lambda: all(j.cut_all for j in jobs), what="every request cut into windows")
    gate.open_all()
    blocker.wait(600)
    return [j.wait(600) for j in jobs], held


def test_requests_whose_prompts_differ_share_a_call_each_window_with_its_own_prompt(real, named_engine, corpus,
                                                                                    run):
    """ctranslate2 takes a prompt per window: requests that differ only in their prompt (live sessions, each
    prompted with its own last words) share engine calls, and each is decoded exactly as alone."""
    gate = Gate()
    r = run(Wrapped(real, gate))
    results, held = _prompted_together(r, gate, corpus[1])
    assert r.engine.calls[held][0] == 3, "the three requests did not share an engine call"
    assert sorted(map(str, r.engine.prompts[held])) == sorted(map(str, PROMPTS))
    assert r.engine.calls[held][2].initial_prompt is None, "a prompted call's options carry no prompt of their own"
    alone = named_engine("ctranslate2")
    for prompt, together in zip(PROMPTS, results):
        assert together.text == alone.transcribe(corpus[1].path, initial_prompt=prompt).text, prompt
    assert "Stella" in results[0].text and "Stella" not in results[2].text


def test_an_engine_with_one_prompt_per_call_gets_each_prompt_in_its_own_call(real, corpus, run):
    gate = Gate()
    engine = Wrapped(real, gate)
    engine.prompt_per_window = False  # as openai-whisper and transformers
    r = run(engine)
    results, held = _prompted_together(r, gate, corpus[1])
    assert [n for n, *_ in r.engine.calls[held:]] == [1, 1, 1]
    assert {options.initial_prompt for _, _, options, _ in r.engine.calls[held:]} == set(PROMPTS)
    assert all(p is None for p in r.engine.prompts)
    assert "Stella" in results[0].text


def test_packing_puts_only_windows_with_the_same_prompt_in_one_engine_window(real, corpus, run):
    """A packed engine window has one prompt: requests with different prompts are never packed together
    (all three would fit in one 30 s window otherwise)."""
    gate = Gate()
    r = run(Wrapped(real, gate), packing=True)
    results, held = _prompted_together(r, gate, corpus[1])
    assert r.engine.calls[held][0] == 3 and sorted(map(str, r.engine.prompts[held])) == sorted(map(str, PROMPTS))
    assert "Stella" in results[0].text and "Stella" not in results[2].text


@pytest.mark.parametrize("lane", [{}, {"condition_on_previous_text": True}], ids=["batched", "sequential"])
def test_a_long_request_does_not_hold_back_a_short_one(real, long_clip, marked, run, lane):
    """A short request is in the engine call right after the one in flight when it is ready, whatever the
    long request asked for; the long one then goes on. Counted in engine calls, never in seconds."""
    gate = Gate()
    r = run(Wrapped(real, gate), max_batch=2)
    long_job = r.submit(long_clip.path, **lane)
    gate.wait_entered()  # the long request's first call is in the engine
    short_job = r.submit(marked)
    wait_until(lambda: short_job.cut_all, what="the short request cut")
    in_flight = len(r.engine.calls)
    gate.open_all()
    short_job.wait(600)
    long_result = long_job.wait(600)
    marks = [marked_windows for _, marked_windows, _, _ in r.engine.calls]
    assert marks.index(1) == in_flight, f"the short request waited {marks.index(1) - in_flight} engine calls"
    assert len(marks) > in_flight + 2, "the long request had nothing left to decode: the test proved nothing"
    assert speech.incomplete(long_clip, long_result.text, long_result.segments) == []


def test_a_request_that_has_waited_goes_before_newer_ones(real, long_clip, corpus, run):
    """Round robin by when a request was last served, a new one counting as served just before the call in
    flight: a stream of new short requests in another lane (live passes) never keeps a long request out of
    its turn. Before, a new request counted as never served and went first, every time."""
    gate = Gate()
    r = run(Wrapped(real, gate), max_batch=2)
    long_job = r.submit(long_clip.path, word_timestamps=True)  # its own lane: never batched with the others
    gate.wait_entered()  # call 1: the long request
    first = r.submit(corpus[0].path)
    wait_until(lambda: first.cut_all, what="the first short request cut")
    gate.step()
    gate.wait_entered()  # call 2: the short request, new since call 1
    second = r.submit(corpus[1].path)
    wait_until(lambda: second.cut_all, what="the second short request cut")
    gate.step()
    gate.wait_entered()  # call 3: the long request's turn, though the second short one is newer
    gate.open_all()
    first.wait(600), second.wait(600), long_job.wait(600)
    lanes = [bool(options.word_timestamps) for _, _, options, _ in r.engine.calls]
    assert lanes[:3] == [True, False, True], lanes
    assert first.first_call == 2 and second.first_call == 4, (first.first_call, second.first_call)


def test_a_live_turns_last_pass_goes_first_in_a_call_of_its_own_then_the_others_get_their_turn(real, marked,
                                                                                               corpus, run):
    """An urgent request (a live turn's last pass) is the next call, alone with other urgent ones, ahead of a
    file request and another session's interim pass that waited longer; the call after it is round robin
    again, so a further last pass arriving meanwhile is batched with them, not ahead of them."""
    gate = Gate()
    r = run(Wrapped(real, gate))
    blocker = r.submit(corpus[8].path)
    gate.wait_entered()  # call 1
    file_request, interim = r.submit(marked), r.submit(corpus[0].path)
    last = r.submit(corpus[1].path, urgent=True)
    wait_until(lambda: all(j.cut_all for j in (file_request, interim, last)), what="every request cut")
    gate.step()
    gate.wait_entered()  # call 2: the last pass
    later_last = r.submit(corpus[2].path, urgent=True)
    wait_until(lambda: later_last.cut_all, what="the later last pass cut")
    gate.open_all()
    for job in (blocker, file_request, interim, last, later_last):
        job.wait(600)
    assert last.first_call == 2 and r.engine.calls[1][:2] == (1, 0), r.engine.calls[:3]
    assert file_request.first_call == interim.first_call == 3, (file_request.first_call, interim.first_call)
    assert r.engine.calls[2][1] == 1, "the file request was not in the call after the urgent one"


def test_sequential_windows_take_the_text_before_as_prompt(real, minute_clip, run):
    """condition_on_previous_text: each 30 s window is decoded with the request's text so far as its prompt
    (what Whisper's own loop does), one window per engine call."""
    r = run(Wrapped(real))
    result = r.submit(minute_clip.path, condition_on_previous_text=True, initial_prompt="Once upon a time.").wait(600)
    prompts = [options.initial_prompt for n, _, options, _ in r.engine.calls]
    assert all(n == 1 for n, *_ in r.engine.calls), "a sequential request is decoded one window at a time"
    assert len(prompts) >= 3 and prompts[0] == "Once upon a time."
    for prompt in prompts[1:]:
        assert prompt.startswith("Once upon a time.") and prompt[len("Once upon a time."):].strip() in result.text
    assert speech.incomplete(minute_clip, result.text, result.segments) == []


@pytest.mark.parametrize("lane", [{}, {"condition_on_previous_text": True}], ids=["batched", "sequential"])
def test_a_cancelled_request_is_dropped(real, long_clip, run, lane):
    """Cancel (a timeout, a client that left): its remaining windows never reach the engine, its ffmpeg stops."""
    gate = Gate()
    r = run(Wrapped(real, gate), max_batch=2)
    job = r.submit(long_clip.path, **lane)
    gate.wait_entered()
    r.scheduler.cancel(job)
    gate.open_all()
    with pytest.raises(CancelledError):
        job.wait(600)
    assert job.cancelled.is_set() and not job.queue and job not in r.scheduler._jobs
    wait_until(lambda: job.audio.done, what="its ffmpeg stopped")
    wait_until(lambda: not any(t.name == f"cut-{job.id}" for t in threading.enumerate()), what="its cutter ended")
    assert len(r.engine.calls) == 1, "the engine went on with a cancelled request"


def test_the_cutters_speech_regions_are_handed_on_where_asked_then_closed(real, long_clip, run):
    """A diarized request's embedder reads the speech the transcription's VAD found (the VAD runs once):
    every region, unpadded inside the window piece it became, and the hand-over closed once cutting ends."""
    r = run(Wrapped(real))
    job = r.submit(long_clip.path, speech=True)
    plain = r.submit(long_clip.path)
    job.wait(600), plain.wait(600)
    regions, closed = job.speech.take(0)
    assert closed and plain.speech is None
    pieces = [(p.start, p.end) for window in windows(job.audio, job.options) for p in window.pieces]
    assert len(regions) == len(pieces) > 5 and all(a <= c < d <= b for (a, b), (c, d) in zip(pieces, regions))


def test_a_request_submitted_during_shutdown_is_refused(named_engine, corpus, tmp_path):
    from serve.core.runtime import scheduler_config
    from serve.core.scheduler import Scheduler
    from serve.errors import ShuttingDownError

    engine = named_engine("ctranslate2")
    scheduler = Scheduler(engine.backend, scheduler_config(engine.settings, "cpu"))
    scheduler.shutdown(grace_s=60)
    with pytest.raises(ShuttingDownError):
        scheduler.submit(corpus[0].path, tmp_path, engine.options())


def test_openai_keeps_float32_weights_under_float16_compute(corpus):
    """openai-whisper's LayerNorm computes in float32 and casts back: float16 weights break it on CUDA.

    The weights stay float32 and the activations run in half precision, as
    ``whisper.transcribe(fp16=True)`` does; the same path runs here on the CPU.
    """
    import torch

    from serve.backends.openai_whisper import OpenAIWhisperBackend
    from serve.core.audio import decode

    backend = OpenAIWhisperBackend.load(MODEL_CACHE / "tiny.en" / "openai" / "tiny.en.pt",
                                        Device("cpu", 0, "float16", 2), "tiny.en")
    assert {p.dtype for p in backend.model.parameters()} == {torch.float32}
    assert backend.fp16
    clip = corpus[2]
    options = DecodeOptions("en", "transcribe", None, (0.0,), 1, True)
    [decoded] = backend.decode([decode(clip.path)], options, 0.0)
    assert speech.wer([clip.text], ["".join(s.text for s in decoded.segments)]) <= speech.MAX_CLIP_WER
    assert decoded.segments[0].words


@pytest.fixture(scope="session")
def silence_and_noise(tmp_path_factory) -> dict[str, Path]:
    """Ten minutes of digital silence, and ten of white noise (-20 dBFS)."""
    import wave

    import numpy as np

    folder = tmp_path_factory.mktemp("nonspeech")
    rng = np.random.default_rng(7)
    samples = 10 * 60 * 16000
    out = {}
    for name, audio in (("silence", np.zeros(samples)), ("noise", rng.normal(0, 0.1, samples))):
        path = folder / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        out[name] = path
    return out


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_silence_and_noise_give_no_text(engine, silence_and_noise, kind):
    """On non-speech Whisper invents sentences ("you", "I'm going to take a look at the..."): by default, none."""
    result = engine.transcribe(silence_and_noise[kind])
    assert result.text == "" and result.segments == (), result.text[:200]
    assert result.duration == pytest.approx(600, abs=0.1)


class _StopsEarly(Wrapped):
    """The real engine, except that the first decode of each window stops after its first segment, with the
    rest unfinished (``resume_at``), as Whisper sometimes does."""

    def __init__(self, inner):
        super().__init__(inner)
        self.cut = 0

    def decode(self, windows, options, temperature, scores=False, prompts=None):
        out = super().decode(windows, options, temperature, scores, prompts)
        if self.cut:
            return out
        self.cut += 1
        return [replace(d, segments=d.segments[:1], resume_at=d.segments[0].end) if len(d.segments) > 1 else d
                for d in out]


def test_a_window_left_unfinished_is_decoded_again_from_where_it_stopped(real, corpus, run, tmp_path):
    """Whisper's loop seeks to where the decoder stopped; the scheduler decodes the rest of the window again,
    and the request's segments come out in order, nothing lost."""
    import wave

    import numpy as np

    two = tmp_path / "two-sentences.wav"
    parts = [speech.load_pcm(corpus[i].path) for i in (2, 3)]
    with wave.open(str(two), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        pcm = np.concatenate([parts[0], np.zeros(8000, np.float32), parts[1]])
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes())
    whole = run(Wrapped(real)).submit(two).wait(600)
    assert len(whole.segments) >= 2, "the test needs a window of two segments"
    r = run(_StopsEarly(real))
    result = r.submit(two).wait(600)
    assert len(r.engine.calls) == 2, "the rest of the window was not decoded again"
    assert speech.wer([corpus[2].text + " " + corpus[3].text], [result.text]) <= speech.MAX_SET_WER
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and [s.id for s in result.segments] == list(range(len(starts)))
    assert result.segments[0].text == whole.segments[0].text
