"""Settings from the environment: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.errors import InvalidParameterError
from serve.settings import Settings
from serve.core.options import TranscribeOptions


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
    ({"WHISPER_MAX_BATCH": "many"}, "WHISPER_MAX_BATCH"),
    ({"WHISPER_PACKING": "sometimes"}, "WHISPER_PACKING"),
    ({"WHISPER_DECODE_WORKERS": "-2"}, "WHISPER_DECODE_WORKERS"),
    ({"WHISPER_MAX_AUDIO_SECONDS": "forever"}, "WHISPER_MAX_AUDIO_SECONDS"),
    ({"WHISPER_SERVER_THREADS": "1"}, "WHISPER_SERVER_THREADS"),
    ({"WHISPER_CLIENT_TIMEOUT_S": "0"}, "WHISPER_CLIENT_TIMEOUT_S"),
    ({"WHISPER_BATCH_SIZE": "8"}, "WHISPER_MAX_BATCH"),
])
def test_bad_values_are_refused_naming_the_variable(env, variable):
    with pytest.raises(InvalidParameterError) as err:
        Settings.from_env(env)
    assert variable in err.value.message


def test_scheduler_defaults_depend_on_the_device():
    """Measured: 16 windows per call on a GPU; on a CPU 4, with short clips packed into shared windows."""
    from serve.core.runtime import scheduler_config

    s = Settings.from_env({})
    cpu, gpu = scheduler_config(s, "cpu"), scheduler_config(s, "cuda")
    assert (cpu.max_batch, cpu.packing, gpu.max_batch, gpu.packing) == (4, True, 16, False)
    assert cpu.max_audio_seconds == 4 * 3600 and cpu.sequential_seconds == 600
    chosen = scheduler_config(Settings.from_env({"WHISPER_MAX_BATCH": "32", "WHISPER_PACKING": "on",
                                                 "WHISPER_DECODE_WORKERS": "3"}), "cuda")
    assert (chosen.max_batch, chosen.packing, chosen.decode_workers) == (32, True, 3)
