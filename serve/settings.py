"""Every setting of the container, read once from the environment.

One typed object; each field says which variable sets it and why it exists.
The README's settings table is this file in prose: keep them together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from .errors import InvalidParameterError
from .params import as_float, as_int, parse_options
from .transcription import TranscribeOptions

BACKENDS = ("auto", "openai", "transformers", "ctranslate2")


@dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("/opt/ml/model")
    """WHISPER_MODEL_DIR (or SM_MODEL_DIR): where SageMaker extracts model.tar.gz.
    Empty or missing: the embedded tiny.en default model is served."""

    backend: str = "auto"
    """WHISPER_BACKEND: auto | openai | transformers | ctranslate2. ``auto``
    picks from the files in the model directory and logs why."""

    hf_model_id: Optional[str] = None
    """HF_MODEL_ID: a Hugging Face hub id loaded by the transformers backend
    when the model directory is empty (needs network access)."""

    hf_task: str = "automatic-speech-recognition"
    """HF_TASK: the pipeline task (kept for the Hugging Face DLC convention)."""

    device: str = "auto"
    """WHISPER_DEVICE: auto | cpu | cuda | cuda:N. auto uses CUDA when present."""

    compute_type: str = "auto"
    """WHISPER_COMPUTE_TYPE: auto | float32 | float16 | int8 | int8_float16...
    auto is float16 on GPU; on CPU int8 for ctranslate2, float32 for torch."""

    cpu_threads: int = 0
    """WHISPER_CPU_THREADS: threads for CPU inference, 0 = all cores of this worker."""

    cache_dir: Path = Path.home() / ".cache" / "whisper-sagemaker"
    """WHISPER_CACHE_DIR: where the embedded default is converted to the
    openai / transformers layouts (once)."""

    window_seconds: float = 600.0
    """WHISPER_WINDOW_SECONDS: audio is decoded and transcribed in windows of at
    most this length, cut at the quietest moment near the end, so memory stays
    bounded whatever the audio length. 0 = the whole file at once."""

    defaults: TranscribeOptions = field(default_factory=TranscribeOptions)
    """Default transcription options, from WHISPER_LANGUAGE, WHISPER_TASK,
    WHISPER_INITIAL_PROMPT, WHISPER_TEMPERATURE, WHISPER_BEAM_SIZE,
    WHISPER_WORD_TIMESTAMPS, WHISPER_VAD_FILTER, WHISPER_CONDITION_ON_PREVIOUS_TEXT,
    WHISPER_CHUNK_LENGTH_S, WHISPER_BATCH_SIZE. A request's parameters override them."""

    max_body_mb: float = 0.0
    """WHISPER_MAX_BODY_MB: reject larger bodies with 413. 0 = no cap (default)."""

    tmp_dir: Optional[Path] = None
    """WHISPER_TMP_DIR: where request bodies are streamed; system temp by default."""

    warmup: bool = True
    """WHISPER_WARMUP: transcribe a short spoken sentence shipped in the package, and
    check its words, before /ping turns 200."""

    port: int = 8080
    """SAGEMAKER_BIND_TO_PORT: the port SageMaker sends traffic to."""

    workers: Optional[int] = None
    """SAGEMAKER_MODEL_SERVER_WORKERS: gunicorn workers. Default: one per GPU, 1 on CPU."""

    timeout: int = 3600
    """SAGEMAKER_MODEL_SERVER_TIMEOUT: seconds a request may run (async allows 3600)."""

    log_level: str = "info"
    """WHISPER_LOG_LEVEL: debug | info | warning | error."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(*names: str) -> Optional[str]:
            for name in names:
                value = env.get(name)
                if value not in (None, ""):
                    return value
            return None

        kwargs: dict = {}
        if (v := get("WHISPER_MODEL_DIR", "SM_MODEL_DIR")) is not None:
            kwargs["model_dir"] = Path(v)
        if (v := get("WHISPER_BACKEND")) is not None:
            v = v.strip().lower()
            if v not in BACKENDS:
                raise InvalidParameterError(f"WHISPER_BACKEND must be one of {', '.join(BACKENDS)}, got {v!r}")
            kwargs["backend"] = v
        if (v := get("HF_MODEL_ID")) is not None:
            kwargs["hf_model_id"] = v
        if (v := get("HF_TASK")) is not None:
            kwargs["hf_task"] = v
        if (v := get("WHISPER_DEVICE")) is not None:
            kwargs["device"] = v.strip().lower()
        if (v := get("WHISPER_COMPUTE_TYPE")) is not None:
            kwargs["compute_type"] = v.strip().lower()
        if (v := get("WHISPER_CPU_THREADS")) is not None:
            kwargs["cpu_threads"] = as_int("WHISPER_CPU_THREADS", v, 0)
        if (v := get("WHISPER_CACHE_DIR")) is not None:
            kwargs["cache_dir"] = Path(v)
        if (v := get("WHISPER_WINDOW_SECONDS")) is not None:
            kwargs["window_seconds"] = as_float("WHISPER_WINDOW_SECONDS", v, 0.0)
            if 0 < kwargs["window_seconds"] < 60:
                raise InvalidParameterError("WHISPER_WINDOW_SECONDS must be 0 (off) or at least 60")
        if (v := get("WHISPER_MAX_BODY_MB")) is not None:
            kwargs["max_body_mb"] = as_float("WHISPER_MAX_BODY_MB", v, 0.0)
        if (v := get("WHISPER_TMP_DIR")) is not None:
            kwargs["tmp_dir"] = Path(v)
        if (v := get("WHISPER_WARMUP")) is not None:
            kwargs["warmup"] = v.strip().lower() not in ("0", "false", "no", "off")
        if (v := get("SAGEMAKER_BIND_TO_PORT")) is not None:
            kwargs["port"] = as_int("SAGEMAKER_BIND_TO_PORT", v, 1)
        if (v := get("SAGEMAKER_MODEL_SERVER_WORKERS")) is not None:
            kwargs["workers"] = as_int("SAGEMAKER_MODEL_SERVER_WORKERS", v, 1)
        if (v := get("SAGEMAKER_MODEL_SERVER_TIMEOUT")) is not None:
            kwargs["timeout"] = as_int("SAGEMAKER_MODEL_SERVER_TIMEOUT", v, 1)
        if (v := get("WHISPER_LOG_LEVEL")) is not None:
            kwargs["log_level"] = v.strip().lower()

        defaults = TranscribeOptions()
        for name in TranscribeOptions.names():
            variable = f"WHISPER_{name.upper()}"
            if (v := get(variable)) is not None:
                try:  # one at a time, so the error names the variable
                    defaults = parse_options({name: v}, source=variable).merged_over(defaults)
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"{variable}: {exc.message}") from None
        kwargs["defaults"] = defaults
        return cls(**kwargs)

