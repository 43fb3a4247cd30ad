"""Parameter parsing: the custom-attributes header, JSON values, form strings, env defaults."""

from __future__ import annotations

import pytest

from serve.errors import InvalidParameterError
from serve.params import CUSTOM_ATTRIBUTES_MAX_CHARS, parse_custom_attributes, parse_options
from serve.settings import Settings
from serve.transcription import TranscribeOptions


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
                                  "chunk_length_s": "15", "batch_size": "8", "language": "EN"})
    from_json = parse_options({"beam_size": 5, "temperature": [0, 0.2, 0.4], "vad_filter": True,
                               "chunk_length_s": 15, "batch_size": 8, "language": "en"})
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
    assert info.value.status_code == 400


def test_unknown_parameter_message_lists_known_ones_and_the_source():
    with pytest.raises(InvalidParameterError) as info:
        parse_options({"modle": "large"}, source="X-Amzn-SageMaker-Custom-Attributes")
    assert "X-Amzn-SageMaker-Custom-Attributes" in info.value.message
    for name in TranscribeOptions.names():
        assert name in info.value.message


def test_request_options_override_settings_defaults_and_unset_ones_fall_back():
    settings = Settings.from_env({"WHISPER_BEAM_SIZE": "3", "WHISPER_WORD_TIMESTAMPS": "true"})
    request = parse_options({"beam_size": "1"})
    merged = request.merged_over(settings.defaults)
    assert merged.beam_size == 1 and merged.word_timestamps is True
    assert merged.language is None

