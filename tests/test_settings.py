"""Settings from the environment: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.errors import InvalidParameterError
from serve.settings import Settings
from serve.transcription import TranscribeOptions


def test_defaults_fit_sagemaker():
    s = Settings.from_env({})
    assert s.model_dir == Path("/opt/ml/model") and s.port == 8080 and s.timeout == 3600
    assert s.backend == "auto" and s.workers is None and s.max_body_mb == 0 and s.window_seconds == 600
    assert s.defaults == TranscribeOptions()


def test_environment_overrides():
    s = Settings.from_env({"SM_MODEL_DIR": "/m", "WHISPER_BACKEND": "OpenAI", "SAGEMAKER_BIND_TO_PORT": "9000",
                           "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120",
                           "WHISPER_LANGUAGE": "en", "WHISPER_WORD_TIMESTAMPS": "true",
                           "WHISPER_TEMPERATURE": "0,0.2,0.4", "WHISPER_MAX_BODY_MB": "50"})
    assert (s.model_dir, s.backend, s.port, s.workers, s.timeout) == (Path("/m"), "openai", 9000, 2, 120)
    assert s.defaults == TranscribeOptions(language="en", word_timestamps=True, temperature=(0.0, 0.2, 0.4))
    assert s.max_body_mb == 50


def test_whisper_model_dir_wins_over_sm_model_dir():
    assert Settings.from_env({"SM_MODEL_DIR": "/a", "WHISPER_MODEL_DIR": "/b"}).model_dir == Path("/b")


def test_empty_variables_mean_unset():
    assert Settings.from_env({"WHISPER_MODEL_DIR": "", "WHISPER_LANGUAGE": ""}) == Settings.from_env({})


@pytest.mark.parametrize("env,variable", [
    ({"WHISPER_BACKEND": "onnx"}, "WHISPER_BACKEND"),
    ({"WHISPER_TASK": "dance"}, "WHISPER_TASK"),
    ({"WHISPER_BEAM_SIZE": "0"}, "WHISPER_BEAM_SIZE"),
    ({"WHISPER_WORD_TIMESTAMPS": "maybe"}, "WHISPER_WORD_TIMESTAMPS"),
    ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT"),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "SAGEMAKER_MODEL_SERVER_WORKERS"),
    ({"WHISPER_WINDOW_SECONDS": "10"}, "WHISPER_WINDOW_SECONDS"),
    ({"WHISPER_MAX_BODY_MB": "-1"}, "WHISPER_MAX_BODY_MB"),
])
def test_bad_values_are_refused_naming_the_variable(env, variable):
    with pytest.raises(InvalidParameterError) as err:
        Settings.from_env(env)
    assert variable in err.value.message
