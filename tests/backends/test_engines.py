"""Every backend on the real tiny.en, through the scheduler: same interface, sensible words, nothing lost."""

from __future__ import annotations

import pytest

from serve.backends import BACKEND_MODULES, backend_class
from serve.core.options import ENGINE_OPTIONS, SPEAKER_OPTIONS, TranscribeOptions
from serve.errors import UnsupportedOptionError
from tests import speech
from tests.conftest import BACKEND_NAMES

MAX_CORPUS_WER = speech.MAX_SET_WER
"""tiny.en on espeak-ng's synthetic voices (the Caribbean and RP voices are hard for it); tests/speech.py
says what the bound rests on."""


def test_every_backend_declares_every_option():
    """The parity test: no option can be silently ignored by a backend that forgot it."""
    names = set(ENGINE_OPTIONS)  # the speaker options are the server's, beside every engine
    assert names | set(SPEAKER_OPTIONS) == set(TranscribeOptions.names())
    assert set(BACKEND_MODULES) == set(BACKEND_NAMES)
    for name in BACKEND_NAMES:
        declared = backend_class(name).support
        assert set(declared) == names, f"{name} backend options differ: {set(declared) ^ names}"
        for option, reason in declared.items():
            assert reason is None or (isinstance(reason, str) and reason), (name, option)


def test_corpus_word_error_rate(engine, corpus, tmp_path):
    """The 16 clips sent at once: they are decoded in shared batches."""
    before = engine.scheduler.calls
    jobs = [engine.submit(clip.path, tmp_path / str(i)) for i, clip in enumerate(corpus)
            if (tmp_path / str(i)).mkdir() is None]
    hyps = [job.wait(600).text for job in jobs]
    refs = [clip.text for clip in corpus]
    error = speech.wer(refs, hyps)
    assert error < MAX_CORPUS_WER, f"{engine.name}: WER {error:.3f}\n" + "\n".join(
        f"  {r!r} -> {h!r}" for r, h in zip(refs, hyps))
    assert engine.scheduler.calls - before < len(corpus), "the clips were not batched together"


def test_long_file_is_complete(engine, long_clip):
    result = engine.transcribe(long_clip.path)
    assert speech.incomplete(long_clip, result.text, result.segments) == []
    assert result.duration == pytest.approx(speech.duration(long_clip.path), abs=0.1)
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end <= result.duration + 0.5
    assert [s.id for s in result.segments] == list(range(len(result.segments)))


def test_long_file_without_vad_is_complete(named_engine, long_clip):
    """Every second decoded, in windows cut at the quietest moment."""
    result = named_engine("ctranslate2").transcribe(long_clip.path, vad_filter=False)
    assert speech.incomplete(long_clip, result.text, result.segments) == []


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_sequential_long_form_is_complete(named_engine, minute_clip, name):
    """condition_on_previous_text: Whisper's 30 s windows one at a time, each with the text before as prompt."""
    result = named_engine(name).transcribe(minute_clip.path, condition_on_previous_text=True)
    assert speech.incomplete(minute_clip, result.text, result.segments) == []
    assert any(s.start > 30 for s in result.segments), "the later windows are missing or not shifted"


def test_short_chunks_are_complete(named_engine, minute_clip):
    result = named_engine("ctranslate2").transcribe(minute_clip.path, chunk_length_s=10)
    assert speech.incomplete(minute_clip, result.text, result.segments) == []
    assert all(s.end - s.start <= 10.5 for s in result.segments)


def test_word_timestamps(engine, corpus):
    clip = corpus[1]
    result = engine.transcribe(clip.path, word_timestamps=True)
    words = result.words
    assert words, f"{engine.name} returned no words"
    assert speech.normalize(" ".join(w.word for w in words)) == speech.normalize(result.text)
    assert speech.wer([clip.text], [result.text]) <= speech.MAX_CLIP_WER
    for w in words:
        assert 0 <= w.start <= w.end <= result.duration + 0.5
        assert type(w.start) is float and type(w.end) is float
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert result.to_dict()["words"][0].keys() >= {"word", "start", "end", "probability"}


def test_without_word_timestamps_no_words(engine, corpus):
    result = engine.transcribe(corpus[0].path)
    assert result.words is None and "words" not in result.to_dict()
    assert result.segments and result.segments[0].start >= 0


def test_openai_and_ctranslate2_float32_greedy_agree(named_engine, corpus):
    """Same weights, same greedy decoding of the same windows: the same words on the short corpus."""
    openai = named_engine("openai", WHISPER_PACKING="off")
    ct2 = named_engine("ctranslate2", WHISPER_PACKING="off", WHISPER_COMPUTE_TYPE="float32")
    for clip in corpus:
        a = openai.transcribe(clip.path).text
        b = ct2.transcribe(clip.path).text
        assert a == b, f"{clip.path.name}: openai {a!r} != ctranslate2 {b!r}"


def test_every_engine_honours_every_option():
    """No option is refused by any engine today (transformers takes prompts since 2026-12: ``prompt_ids``);
    the refusal itself, naming the option and the engine, is tested in tests/core/test_options.py."""
    for name in BACKEND_NAMES:
        assert set(backend_class(name).support) == set(ENGINE_OPTIONS)
        assert all(reason is None for reason in backend_class(name).support.values()), name


@pytest.mark.parametrize("options,words", [
    ({"language": "fr"}, ("language=fr", "English-only")),
    ({"task": "translate"}, ("task=translate", "English-only")),
])
def test_english_only_model_refuses_other_languages(engine, options, words):
    with pytest.raises(UnsupportedOptionError) as err:
        engine.options(**options)
    for w in words:
        assert w in err.value.message
    assert engine.name in err.value.message


def test_explicit_english_is_fine(engine, corpus):
    result = engine.transcribe(corpus[2].path, language="en")
    assert result.language == "en" and "weather" in result.text.lower()


@pytest.mark.parametrize("name", ["openai", "ctranslate2", "transformers"])
def test_beam_search_and_temperature_fallback(named_engine, corpus, name):
    clip = corpus[3]
    result = named_engine(name).transcribe(clip.path, beam_size=3, temperature=(0.0, 0.4))
    assert speech.wer([clip.text], [result.text]) <= speech.MAX_CLIP_WER


@pytest.mark.parametrize("name", ["openai", "ctranslate2", "transformers"])
def test_initial_prompt_steers_spelling(named_engine, corpus, name):
    result = named_engine(name).transcribe(corpus[1].path, initial_prompt="Stella, Stella.")
    assert "Stella" in result.text
