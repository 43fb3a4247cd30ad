"""Every setting of the container, read once from the environment.

One typed object; each field says which variable sets it and why it exists.
The README's settings table is this file in prose: keep them together.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from .core.options import TranscribeOptions, as_float, as_int, parse_options
from .errors import InvalidParameterError

BACKENDS = ("auto", "openai", "transformers", "ctranslate2")
PACKING = ("on", "off")


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

    max_batch: int = 0
    """WHISPER_MAX_BATCH: most windows of 30 s (from all concurrent requests) decoded in one
    engine call. 0 = measured default: 16 on a GPU, 4 on a CPU."""

    packing: bool = False
    """WHISPER_PACKING: on | off (default off). Pack short windows of several requests into one 30 s
    engine window: faster on a CPU, but a request's words then depend on who else was speaking."""

    engine_timeout_s: float = 600.0
    """WHISPER_ENGINE_TIMEOUT_S: an engine call running longer is hung: /ping answers 503."""

    decode_workers: int = 0
    """WHISPER_DECODE_WORKERS: ffmpeg processes (and VAD passes) running at once. 0 = one per core, 2 to 8."""

    max_audio_seconds: float = 4 * 3600.0
    """WHISPER_MAX_AUDIO_SECONDS: the longest audio one request may decode (413 beyond),
    so a small body cannot buy hours of computing. 0 = no limit."""

    defaults: TranscribeOptions = field(default_factory=TranscribeOptions)
    """Default transcription options, from WHISPER_LANGUAGE, WHISPER_TASK,
    WHISPER_INITIAL_PROMPT, WHISPER_TEMPERATURE, WHISPER_BEAM_SIZE,
    WHISPER_WORD_TIMESTAMPS, WHISPER_VAD_FILTER, WHISPER_CONDITION_ON_PREVIOUS_TEXT,
    WHISPER_CHUNK_LENGTH_S. A request's parameters override them."""

    max_body_mb: float = 0.0
    """WHISPER_MAX_BODY_MB: reject larger bodies with 413. 0 = no cap (default)."""

    scratch_dir: Path = Path(tempfile.gettempdir()) / "whisper-scratch"
    """WHISPER_TMP_DIR: where request bodies and their decoded audio live, one folder per
    request, removed when it ends. The server empties it at start: use a folder of its own."""

    warmup: bool = True
    """WHISPER_WARMUP: transcribe a short spoken sentence shipped in the package, and
    check its words, before /ping turns 200."""

    port: int = 8080
    """SAGEMAKER_BIND_TO_PORT: the port SageMaker sends traffic to."""

    bind_host: str = "0.0.0.0"
    """WHISPER_BIND_HOST: the address the server listens on (local runs and tests use 127.0.0.1)."""

    client_timeout: int = 60
    """WHISPER_CLIENT_TIMEOUT_S: a client silent this long mid-body, or slower than this to send all its
    headers, is dropped: nginx closes the connection without an answer (it logs 408, never sends it) and
    nothing reaches gunicorn. nginx holds slow uploads, never a worker thread."""

    server_threads: int = 64
    """WHISPER_SERVER_THREADS: connection threads per worker. Each in-flight request holds
    one while it waits for its transcription, so this bounds the requests a worker batches."""

    workers: Optional[int] = None
    """SAGEMAKER_MODEL_SERVER_WORKERS: gunicorn workers. Default: one per GPU, 1 on CPU."""

    timeout: int = 3600
    """SAGEMAKER_MODEL_SERVER_TIMEOUT: seconds a request may run (async allows 3600)."""

    log_level: str = "info"
    """WHISPER_LOG_LEVEL: debug | info | warning | error."""

    def visible_gpus(self) -> list[str]:
        """GPU ids this container may use (CUDA_VISIBLE_DEVICES, else the driver's), found without initialising CUDA."""
        if self.device == "cpu":
            return []
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        if mask is not None:
            ids = [g.strip() for g in mask.split(",") if g.strip()]
            return [] if ids[:1] == ["-1"] else ids
        proc_gpus = glob.glob("/proc/driver/nvidia/gpus/*")
        if proc_gpus:
            return [str(i) for i in range(len(proc_gpus))]
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
                return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]
            except (OSError, subprocess.SubprocessError):
                pass
        return []

    @property
    def front_dir(self) -> Path:
        """nginx's files (configuration, buffered bodies) and gunicorn's socket, inside the scratch folder."""
        return self.scratch_dir / "front"

    @property
    def gunicorn_socket(self) -> Path:
        return self.front_dir / "gunicorn.sock"

    def worker_count(self) -> int:
        """Worker processes: SAGEMAKER_MODEL_SERVER_WORKERS, else one per GPU, 1 on CPU."""
        return self.workers or max(1, len(self.visible_gpus()))

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
            kwargs["backend"] = _choice("WHISPER_BACKEND", v, BACKENDS)
        if (v := get("HF_MODEL_ID")) is not None:
            kwargs["hf_model_id"] = v
        if (v := get("WHISPER_DEVICE")) is not None:
            kwargs["device"] = v.strip().lower()
        if (v := get("WHISPER_COMPUTE_TYPE")) is not None:
            kwargs["compute_type"] = v.strip().lower()
        if (v := get("WHISPER_CPU_THREADS")) is not None:
            kwargs["cpu_threads"] = as_int("WHISPER_CPU_THREADS", v, 0)
        if (v := get("WHISPER_CACHE_DIR")) is not None:
            kwargs["cache_dir"] = Path(v)
        if get("WHISPER_WINDOW_SECONDS") is not None:
            raise InvalidParameterError("WHISPER_WINDOW_SECONDS is retired: condition_on_previous_text requests are "
                                        "now decoded in Whisper's own 30 s windows, taking turns with the other "
                                        "requests")
        if (v := get("WHISPER_ENGINE_TIMEOUT_S")) is not None:
            kwargs["engine_timeout_s"] = as_float("WHISPER_ENGINE_TIMEOUT_S", v, 1.0)
        if (v := get("WHISPER_MAX_BATCH")) is not None:
            kwargs["max_batch"] = as_int("WHISPER_MAX_BATCH", v, 0, 256)
        if (v := get("WHISPER_PACKING")) is not None:
            kwargs["packing"] = _choice("WHISPER_PACKING", v, PACKING) == "on"
        if (v := get("WHISPER_DECODE_WORKERS")) is not None:
            kwargs["decode_workers"] = as_int("WHISPER_DECODE_WORKERS", v, 0, 256)
        if (v := get("WHISPER_MAX_AUDIO_SECONDS")) is not None:
            kwargs["max_audio_seconds"] = as_float("WHISPER_MAX_AUDIO_SECONDS", v, 0.0)
        if (v := get("WHISPER_MAX_BODY_MB")) is not None:
            kwargs["max_body_mb"] = as_float("WHISPER_MAX_BODY_MB", v, 0.0)
        if (v := get("WHISPER_TMP_DIR")) is not None:
            kwargs["scratch_dir"] = Path(v)
        if (v := get("WHISPER_WARMUP")) is not None:
            kwargs["warmup"] = v.strip().lower() not in ("0", "false", "no", "off")
        if (v := get("SAGEMAKER_BIND_TO_PORT")) is not None:
            kwargs["port"] = as_int("SAGEMAKER_BIND_TO_PORT", v, 1, 65535)
        if (v := get("WHISPER_BIND_HOST")) is not None:
            kwargs["bind_host"] = v.strip()
        if (v := get("WHISPER_CLIENT_TIMEOUT_S")) is not None:
            kwargs["client_timeout"] = as_int("WHISPER_CLIENT_TIMEOUT_S", v, 1, 3600)
        if (v := get("WHISPER_SERVER_THREADS")) is not None:
            kwargs["server_threads"] = as_int("WHISPER_SERVER_THREADS", v, 4, 1024)
        if (v := get("SAGEMAKER_MODEL_SERVER_WORKERS")) is not None:
            kwargs["workers"] = as_int("SAGEMAKER_MODEL_SERVER_WORKERS", v, 1)
        if (v := get("SAGEMAKER_MODEL_SERVER_TIMEOUT")) is not None:
            kwargs["timeout"] = as_int("SAGEMAKER_MODEL_SERVER_TIMEOUT", v, 1)
        if (v := get("WHISPER_LOG_LEVEL")) is not None:
            kwargs["log_level"] = v.strip().lower()

        if get("WHISPER_BATCH_SIZE") is not None:
            raise InvalidParameterError("WHISPER_BATCH_SIZE is retired: the server batches windows of all concurrent "
                                        "requests itself; set WHISPER_MAX_BATCH to bound an engine call")
        if (v := get("HF_TASK")) is not None and v != "automatic-speech-recognition":
            raise InvalidParameterError(f"HF_TASK={v}: this container serves automatic-speech-recognition only")

        defaults = TranscribeOptions()
        for name in TranscribeOptions.names():
            variable = f"WHISPER_{name.upper()}"
            if (v := get(variable)) is not None:
                try:  # one at a time, so the error names the variable
                    defaults = parse_options({name: v}, source=variable)[0].merged_over(defaults)
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"{variable}: {exc.message}") from None
        kwargs["defaults"] = defaults
        return cls(**kwargs)


def _choice(variable: str, value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise InvalidParameterError(f"{variable} must be one of {', '.join(allowed)}, got {value!r}")
    return value
