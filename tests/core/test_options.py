"""Options: parsed alike from the header, JSON, form strings and env defaults; resolved once per request."""

from __future__ import annotations

import pytest

from serve.core.options import (BUILT_IN, CUSTOM_ATTRIBUTES_MAX_CHARS, Capabilities, TranscribeOptions, as_bool,
                                parse_custom_attributes, resolve)
from serve.core.options import parse_options as parse_with_extras
from serve.errors import InvalidParameterError, UnsupportedOptionError
from serve.settings import Settings


def parse_options(values, source="parameters"):
    options, extras = parse_with_extras(values, source)
    assert extras == {}
    return options


def test_custom_attributes_example_from_the_issue():
    raw = parse_custom_attributes("language=fr;task=translate;word_timestamps=true")
    assert raw == {"language": "fr", "task": "translate", "word_timestamps": "true"}
    options = parse_options(raw, source="header")
    assert (options.language, options.task, options.word_timestamps) == ("fr", "translate", True)


def test_custom_attributes_tolerate_spaces_and_empty_items_and_keep_equals_in_values():
    raw = parse_custom_attributes(" language = en ;; initial_prompt=a=b; ")
    assert raw == {"language": "en", "initial_prompt": "a=b"}


@pytest.mark.parametrize("header", [None, ""])
def test_no_custom_attributes(header):
    assert parse_custom_attributes(header) == {}


def test_custom_attributes_limit_is_sagemakers_1024_characters():
    item = "initial_prompt="
    at_limit = item + "x" * (CUSTOM_ATTRIBUTES_MAX_CHARS - len(item))
    assert len(parse_custom_attributes(at_limit)["initial_prompt"]) == CUSTOM_ATTRIBUTES_MAX_CHARS - len(item)
    with pytest.raises(InvalidParameterError, match="1024"):
        parse_custom_attributes(at_limit + "x")


def test_custom_attribute_without_equals_is_rejected_with_an_example():
    with pytest.raises(InvalidParameterError, match="name=value"):
        parse_custom_attributes("language")


def test_strings_and_json_values_parse_alike():
    from_strings = parse_options({"beam_size": "5", "temperature": "0,0.2,0.4", "vad_filter": "yes",
                                  "chunk_length_s": "15", "language": "EN"})
    from_json = parse_options({"beam_size": 5, "temperature": [0, 0.2, 0.4], "vad_filter": True,
                               "chunk_length_s": 15, "language": "en"})
    assert from_strings == from_json
    assert from_json.temperature == (0.0, 0.2, 0.4) and from_json.language == "en"


@pytest.mark.parametrize("language", ["auto", "detect", ""])
def test_language_auto_means_detect(language):
    assert parse_options({"language": language}).language is None


def test_dashes_and_case_in_names_are_accepted():
    assert parse_options({"Word-Timestamps": "true"}).word_timestamps is True


@pytest.mark.parametrize(("values", "message"), [
    ({"word_timestamp": "true"}, "unknown parameter 'word_timestamp'"),
    ({"beam_size": "0"}, "between 1 and 20"),
    ({"beam_size": "2.5"}, "integer"),
    ({"beam_size": True}, "integer"),
    ({"temperature": "0.4,0.2"}, "increase"),
    ({"temperature": "2"}, "between 0.0 and 1.0"),
    ({"word_timestamps": "maybe"}, "true or false"),
    ({"task": "summarize"}, "transcribe, translate"),
    ({"language": "french!"}, "language code"),
    ({"language": 7}, "language code"),
    ({"chunk_length_s": "31"}, "between 1.0 and 30.0"),
    ({"initial_prompt": 12}, "text"),
])
def test_invalid_values_name_the_parameter(values, message):
    with pytest.raises(InvalidParameterError) as info:
        parse_options(values, source="the test")
    assert message in info.value.message
    assert info.value.param == next(iter(values))


def test_unknown_parameter_message_lists_known_ones_and_the_source():
    with pytest.raises(InvalidParameterError) as info:
        parse_options({"modle": "large"}, source="X-Amzn-SageMaker-Custom-Attributes")
    assert "X-Amzn-SageMaker-Custom-Attributes" in info.value.message
    for name in TranscribeOptions.names():
        assert name in info.value.message


def test_a_repeated_custom_attribute_is_refused_naming_it():
    with pytest.raises(InvalidParameterError) as info:
        parse_custom_attributes("language=fr;word_timestamps=true;Language=en")
    assert "'Language' more than once" in info.value.message and info.value.param == "language"


def test_a_name_given_twice_in_one_source_is_refused():
    with pytest.raises(InvalidParameterError, match="more than once"):
        parse_options({"beam_size": "2", "Beam-Size": "3"})


def test_batch_size_is_retired_with_a_reason():
    with pytest.raises(InvalidParameterError) as info:
        parse_options({"batch_size": "8"})
    assert "WHISPER_MAX_BATCH" in info.value.message and info.value.param == "batch_size"


def test_extra_parameters_are_parsed_apart():
    options, extras = parse_with_extras({"stream": "true", "language": "en"}, "form",
                                        extra={"stream": lambda v: as_bool("stream", v)})
    assert options == TranscribeOptions(language="en") and extras == {"stream": True}


def _capabilities(**support) -> Capabilities:
    table = {name: None for name in TranscribeOptions.names()}
    table.update(support)
    return Capabilities("engine", "tiny.en", True, table, {"vad_filter": False})


def test_resolve_takes_the_request_then_the_settings_then_the_built_in_defaults():
    defaults = Settings.from_env({"WHISPER_BEAM_SIZE": "3", "WHISPER_WORD_TIMESTAMPS": "true"}).defaults
    o = resolve(TranscribeOptions(beam_size=1), defaults, _capabilities())
    assert o.decode.beam_size == 1 and o.decode.word_timestamps is True
    assert o.decode.temperatures == BUILT_IN.temperature and o.vad_filter is True and o.chunk_length_s == 30.0
    assert o.decode.language == "en"  # an English-only model's language, stated
    assert not o.sequential and resolve(TranscribeOptions(condition_on_previous_text=True), TranscribeOptions(),
                                        _capabilities()).sequential


def test_resolve_refuses_what_the_backend_cannot_honour_and_accepts_its_off_value():
    capabilities = _capabilities(vad_filter="no VAD here")
    with pytest.raises(UnsupportedOptionError) as info:
        resolve(TranscribeOptions(vad_filter=True), TranscribeOptions(), capabilities)
    assert "vad_filter=true" in info.value.message and "engine backend" in info.value.message
    assert resolve(TranscribeOptions(vad_filter=False), TranscribeOptions(), capabilities).vad_filter is False


def test_resolve_checks_settings_defaults_too():
    """A WHISPER_* default the model cannot honour fails (the runtime checks it at start)."""
    with pytest.raises(UnsupportedOptionError, match="English-only"):
        resolve(TranscribeOptions(), TranscribeOptions(task="translate"), _capabilities())
