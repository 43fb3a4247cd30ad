"""Choose the model artifact, the device and the backend, and load it.

``load_backend(settings)`` is the only entry point: it looks at the model
directory (or falls back to HF_MODEL_ID, then to the embedded tiny.en),
picks the backend (WHISPER_BACKEND, or ``auto`` from the files found),
resolves the device and precision, and logs every choice with its reason.
The backend itself gets only what it needs: a path, a device, a name.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from ..settings import Settings
from .base import Backend, Device

log = logging.getLogger(__name__)

BACKEND_MODULES = {
    "openai": "serve.backends.openai_whisper",
    "transformers": "serve.backends.transformers_pipeline",
    "ctranslate2": "serve.backends.ctranslate2",
}
DEFAULT_BACKEND = "ctranslate2"
"""With no artifacts and WHISPER_BACKEND=auto: the fastest engine per byte of memory."""


def backend_class(name: str) -> type[Backend]:
    module = importlib.import_module(BACKEND_MODULES[name])
    return module.BACKEND


def cuda_device_count() -> int:
    """GPUs visible to this process, without initialising CUDA in torch when avoidable."""
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count()
    except Exception:  # ctranslate2 missing or built without CUDA
        pass
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def resolve_device(settings: Settings, backend: str) -> Device:
    """Settings -> a concrete device: CUDA (fp16) when present, else CPU."""
    requested = settings.device
    if requested == "auto":
        kind, index = ("cuda", 0) if cuda_device_count() > 0 else ("cpu", 0)
    elif requested == "cpu":
        kind, index = "cpu", 0
    elif requested.startswith("cuda"):
        kind, _, idx = requested.partition(":")
        index = int(idx) if idx else 0
    else:
        raise ValueError(f"WHISPER_DEVICE must be auto, cpu, cuda or cuda:N, got {requested!r}")
    compute = settings.compute_type
    if compute == "auto":
        if kind == "cuda":
            compute = "float16"
        else:
            compute = "int8" if backend == "ctranslate2" else "float32"
    if backend != "ctranslate2" and compute not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"WHISPER_COMPUTE_TYPE={compute} is for ctranslate2; the {backend} backend takes float32, float16 or bfloat16")
    if kind == "cpu" and compute == "float16" and backend != "ctranslate2":
        raise ValueError("WHISPER_COMPUTE_TYPE=float16 needs a GPU for the torch backends; use float32 on CPU")
    threads = settings.cpu_threads or len(os.sched_getaffinity(0))
    return Device(kind=kind, index=index, compute_type=compute, cpu_threads=threads)


def choose_artifact(settings: Settings) -> tuple[str, Path | str, str, str]:
    """(backend, model path or hub id, model name, why) for these settings."""
    from ..models import artifacts

    requested = settings.backend
    layout = artifacts.detect_layout(settings.model_dir) if requested == "auto" else \
        artifacts.layout_for_backend(settings.model_dir, requested)
    if layout is not None:
        return layout.backend, layout.path, layout.model_name, layout.reason
    if settings.hf_model_id:
        if requested not in ("auto", "transformers"):
            raise ValueError(f"HF_MODEL_ID is set but WHISPER_BACKEND={requested}; HF_MODEL_ID is loaded by the transformers backend")
        return "transformers", settings.hf_model_id, settings.hf_model_id, \
            f"{settings.model_dir} holds no model and HF_MODEL_ID={settings.hf_model_id}"
    from ..models.default_model import default_model_path

    backend = DEFAULT_BACKEND if requested == "auto" else requested
    return backend, default_model_path(backend, settings.cache_dir), "tiny.en", \
        f"{settings.model_dir} holds no model: serving the embedded tiny.en default"


def load_backend(settings: Settings) -> Backend:
    backend, path, model_name, why = choose_artifact(settings)
    device = resolve_device(settings, backend)
    log.info("model: backend=%s model=%s path=%s device=%s compute_type=%s threads=%d (%s)",
             backend, model_name, path, device.torch_device, device.compute_type, device.cpu_threads, why)
    return backend_class(backend).load(path, device, model_name)
