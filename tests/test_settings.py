"""Settings from the environment: defaults, overrides, and errors that name the variable and what it takes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from serve.core.options import TranscribeOptions
from serve.errors import InvalidParameterError
from serve.settings import RETIRED, Settings, settings_table

ROOT = Path(__file__).resolve().parents[1]
KEY = "k3y-0123456789abcdef-xyz"


def knobs() -> list:
    return [f.metadata["knob"] for f in dataclasses.fields(Settings) if "knob" in f.metadata]


def test_defaults_fit_sagemaker():
    s = Settings.from_env({})
    assert s.model_dir == Path("/opt/ml/model") and s.port == 8080 and s.timeout == 3600
    assert s.backend == "auto" and s.workers is None and s.max_body_mb == 0
    assert s.packing is False and s.engine_timeout_s == 600 and s.max_json_mb == 128
    assert s.s3_allow == () and s.api_key is None
    assert s.defaults == TranscribeOptions()
    assert s == Settings()  # the table's defaults are the dataclass's


def test_environment_overrides():
    s = Settings.from_env({"SM_MODEL_DIR": "/m", "WHISPER_BACKEND": "OpenAI", "SAGEMAKER_BIND_TO_PORT": "9000",
                           "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120",
                           "WHISPER_LANGUAGE": "en", "WHISPER_WORD_TIMESTAMPS": "true",
                           "WHISPER_TEMPERATURE": "0,0.2,0.4", "WHISPER_MAX_BODY_MB": "50",
                           "WHISPER_PACKING": "on", "WHISPER_WARMUP": "Off", "WHISPER_ENGINE_TIMEOUT_S": "0.5",
                           "WHISPER_MAX_JSON_MB": "10", "WHISPER_DEVICE": "CUDA:1", "WHISPER_LOG_LEVEL": "DEBUG",
                           "WHISPER_S3_ALLOW": "s3://calls/2024/, s3://other-bucket  s3://third/a/b",
                           "WHISPER_API_KEY": KEY})
    assert (s.model_dir, s.backend, s.port, s.workers, s.timeout) == (Path("/m"), "openai", 9000, 2, 120)
    assert s.defaults == TranscribeOptions(language="en", word_timestamps=True, temperature=(0.0, 0.2, 0.4))
    assert (s.max_body_mb, s.packing, s.warmup, s.engine_timeout_s, s.max_json_mb) == (50, True, False, 0.5, 10)
    assert (s.device, s.log_level) == ("cuda:1", "debug")
    assert s.s3_allow == ("s3://calls/2024", "s3://other-bucket/", "s3://third/a/b")
    assert s.api_key == KEY


def test_whisper_model_dir_wins_over_sm_model_dir():
    assert Settings.from_env({"SM_MODEL_DIR": "/a", "WHISPER_MODEL_DIR": "/b"}).model_dir == Path("/b")


def test_empty_variables_mean_unset():
    assert Settings.from_env({"WHISPER_MODEL_DIR": "", "WHISPER_LANGUAGE": "", "WHISPER_WARMUP": ""}) == \
        Settings.from_env({})


def test_settings_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).warmup = False  # type: ignore[misc]


@pytest.mark.parametrize("env,variable,takes", [
    ({"WHISPER_WARMUP": "flase"}, "WHISPER_WARMUP", "true or false"),
    ({"WHISPER_PACKING": "sometimes"}, "WHISPER_PACKING", "true or false"),
    ({"WHISPER_PACKING": "auto"}, "WHISPER_PACKING", "packing is now off unless set to on"),
    ({"WHISPER_BACKEND": "onnx"}, "WHISPER_BACKEND", "one of auto, openai, transformers, ctranslate2"),
    ({"WHISPER_DEVICE": "tpu"}, "WHISPER_DEVICE", "auto, cpu, cuda or cuda:N"),
    ({"WHISPER_COMPUTE_TYPE": "int3"}, "WHISPER_COMPUTE_TYPE", "one of auto, float32"),
    ({"WHISPER_LOG_LEVEL": "verbose"}, "WHISPER_LOG_LEVEL", "one of debug, info, warning, error"),
    ({"WHISPER_TASK": "dance"}, "WHISPER_TASK", "transcribe"),
    ({"WHISPER_BEAM_SIZE": "0"}, "WHISPER_BEAM_SIZE", "between 1 and 20"),
    ({"WHISPER_WORD_TIMESTAMPS": "maybe"}, "WHISPER_WORD_TIMESTAMPS", "true or false"),
    ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT", "an integer from 1 to 65535"),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "SAGEMAKER_MODEL_SERVER_WORKERS", "an integer, at least 1"),
    ({"WHISPER_MAX_BODY_MB": "-1"}, "WHISPER_MAX_BODY_MB", "a number, at least 0"),
    ({"WHISPER_MAX_JSON_MB": "0"}, "WHISPER_MAX_JSON_MB", "a number, above 0"),
    ({"WHISPER_ENGINE_TIMEOUT_S": "0"}, "WHISPER_ENGINE_TIMEOUT_S", "a number, above 0"),
    ({"WHISPER_ENGINE_TIMEOUT_S": "nan"}, "WHISPER_ENGINE_TIMEOUT_S", "a number, above 0"),
    ({"WHISPER_MAX_BATCH": "many"}, "WHISPER_MAX_BATCH", "an integer from 0 to 256"),
    ({"WHISPER_MAX_BATCH": "4.5"}, "WHISPER_MAX_BATCH", "an integer from 0 to 256"),
    ({"WHISPER_DECODE_WORKERS": "-2"}, "WHISPER_DECODE_WORKERS", "an integer from 0 to 256"),
    ({"WHISPER_MAX_AUDIO_SECONDS": "forever"}, "WHISPER_MAX_AUDIO_SECONDS", "a number"),
    ({"WHISPER_SERVER_THREADS": "1"}, "WHISPER_SERVER_THREADS", "an integer from 4 to 1024"),
    ({"WHISPER_CLIENT_TIMEOUT_S": "0"}, "WHISPER_CLIENT_TIMEOUT_S", "an integer from 1 to 3600"),
    ({"WHISPER_S3_ALLOW": "https://bucket/x"}, "WHISPER_S3_ALLOW", "s3://bucket/prefix"),
    ({"WHISPER_S3_ALLOW": "s3://Bucket/x"}, "WHISPER_S3_ALLOW", "s3://bucket/prefix"),
    ({"WHISPER_S3_ALLOW": "s3://bucket/a/../b"}, "WHISPER_S3_ALLOW", "s3://bucket/prefix"),
    ({"WHISPER_API_KEY": "short"}, "WHISPER_API_KEY", "at least 16 printable ASCII"),
    ({"WHISPER_API_KEY": "has a space in it, sixteen+"}, "WHISPER_API_KEY", "without spaces"),
    ({"WHISPER_BATCH_SIZE": "8"}, "WHISPER_BATCH_SIZE", "set WHISPER_MAX_BATCH"),
    ({"WHISPER_WINDOW_SECONDS": "600"}, "WHISPER_WINDOW_SECONDS",
     "condition_on_previous_text requests are now decoded in Whisper's own 30 s windows, taking turns with the "
     "other requests"),
    ({"HF_TASK": "text-generation"}, "HF_TASK", "automatic-speech-recognition only"),
])
def test_bad_values_are_refused_naming_the_variable_and_what_it_takes(env, variable, takes):
    with pytest.raises(InvalidParameterError) as err:
        Settings.from_env(env)
    assert variable in err.value.message and takes in err.value.message, err.value.message


@pytest.mark.parametrize("knob", [k for k in knobs() if k.kind.takes not in ("text", "a path")], ids=lambda k: k.env)
def test_every_knob_refuses_what_it_cannot_read(knob):
    """No variable of the table quietly takes an unreadable value (as WHISPER_WARMUP=flase once meant on)."""
    for name in (knob.env, *knob.also):
        with pytest.raises(InvalidParameterError) as err:
            Settings.from_env({name: "flase"})
        assert name in err.value.message and knob.kind.takes in err.value.message


def test_the_api_key_is_never_shown():
    s = Settings.from_env({"WHISPER_API_KEY": KEY})
    assert KEY not in repr(s) and KEY not in str(s)
    almost = KEY + " x"  # unreadable (a space): the error still must not echo it
    with pytest.raises(InvalidParameterError) as err:
        Settings.from_env({"WHISPER_API_KEY": almost})
    assert KEY not in err.value.message


def test_the_readme_table_is_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- settings table:[^\n]*-->\n(.*?)<!-- end of settings table -->", readme, re.S)
    assert found, "the README lost its settings table markers"
    assert found.group(1).strip() == settings_table().strip(), \
        "README's settings table differs from serve/settings.py: paste `python -m serve.settings` into it"
    for name in [k.env for k in knobs()] + list(RETIRED):
        assert f"`{name}`" in found.group(1)


def test_a_bad_value_stops_the_real_start(tmp_path):
    """container/serve (what SageMaker runs) exits non-zero at once, saying which variable and what it takes."""
    from tests.server_harness import running_server

    with running_server("ctranslate2", env={"WHISPER_WARMUP": "flase"}, wait=False) as srv:
        code = srv.process.wait(timeout=60)
        log = srv.log()
    assert code != 0
    assert "serve: WHISPER_WARMUP='flase' cannot be read: WHISPER_WARMUP takes true or false" in log, log[-2000:]
    assert "Traceback" not in log, "a setting's message, not a stack"


def test_scheduler_defaults_depend_on_the_device():
    """Measured: 16 windows per call on a GPU, 4 on a CPU; packing only when asked for, on every device."""
    from serve.core.runtime import scheduler_config

    s = Settings.from_env({})
    cpu, gpu = scheduler_config(s, "cpu"), scheduler_config(s, "cuda")
    assert (cpu.max_batch, cpu.packing, gpu.max_batch, gpu.packing) == (4, False, 16, False)
    assert cpu.max_audio_seconds == 4 * 3600
    chosen = scheduler_config(Settings.from_env({"WHISPER_MAX_BATCH": "32", "WHISPER_PACKING": "on",
                                                 "WHISPER_DECODE_WORKERS": "3"}), "cuda")
    assert (chosen.max_batch, chosen.packing, chosen.decode_workers) == (32, True, 3)
