"""Shared fixtures: the espeak-ng corpus, and each backend loaded once on the real tiny.en."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.backends import BACKEND_MODULES
from tests import speech

ROOT = Path(__file__).resolve().parents[1]
MODEL_CACHE = ROOT / ".cache" / "models"
"""Converted embedded model, kept between test sessions (conversion is exact and deterministic)."""

BACKEND_NAMES = tuple(BACKEND_MODULES)

# The real server, one per backend for the whole session (the ``server`` fixture).
pytest_plugins = ["tests.server_harness"]

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def moto_server():
    """One moto server on 127.0.0.1 for the session (S3, SageMaker, ECR, SNS...); tests reset it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """A clean moto account; the environment points boto3 (and subprocesses) at it."""
    from tests._moto import moto_environment, reset_moto

    reset_moto(moto_server)
    for name, value in moto_environment(moto_server, tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


@pytest.fixture(scope="session")
def corpus() -> list[speech.Clip]:
    return speech.corpus(16)


@pytest.fixture(scope="session")
def long_clip() -> speech.Clip:
    clip = speech.long_clip(3.0)
    assert speech.duration(clip.path) >= 180
    return clip


@pytest.fixture(scope="session")
def long_flac() -> speech.Clip:
    """``long_clip`` as FLAC: decoded by ffmpeg (a 16 kHz mono WAV is copied without it), for decoder faults."""
    return speech.long_clip(3.0, fmt="flac")


@pytest.fixture(scope="session")
def minute_clip() -> speech.Clip:
    """About a minute of speech: more than one 30 s chunk, cheap enough for option tests."""
    return speech.long_clip(1.0)


@pytest.fixture(scope="session")
def empty_model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty-model-dir")


def backend_settings(name: str, model_dir: Path, **env: str):
    from serve.settings import Settings

    base = {"WHISPER_MODEL_DIR": str(model_dir), "WHISPER_BACKEND": name,
            "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_DEVICE": "cpu"}
    base.update(env)
    return Settings.from_env(base)


@dataclass
class Engine:
    """A backend on the real tiny.en with its scheduler: the path every request takes, minus HTTP."""

    backend: object
    scheduler: object
    settings: object

    @property
    def name(self) -> str:
        return self.backend.name

    def options(self, **options):
        from serve.core.options import TranscribeOptions, resolve

        return resolve(TranscribeOptions(**options), self.settings.defaults, self.backend.capabilities)

    def submit(self, path: Path, scratch: Path, **options):
        return self.scheduler.submit(Path(path), Path(scratch), self.options(**options))

    def transcribe(self, path: Path, **options):
        with tempfile.TemporaryDirectory(prefix="engine-") as scratch:
            return self.submit(path, Path(scratch), **options).wait(timeout=1200)


_engines: dict = {}


def engine_for(name: str, model_dir: Path, **env: str) -> Engine:
    """``name``'s backend with a scheduler, loaded once per distinct settings for the session."""
    from serve.backends import load_backend
    from serve.core.runtime import scheduler_config
    from serve.core.scheduler import Scheduler

    key = (name, tuple(sorted(env.items())))
    if key not in _engines:
        settings = backend_settings(name, model_dir, **env)
        same_model = {k: v for k, v in env.items() if k in ("WHISPER_COMPUTE_TYPE", "WHISPER_CPU_THREADS")}
        loaded = next((e.backend for (n, kv), e in _engines.items()
                       if n == name and {k: v for k, v in kv if k in same_model} == same_model), None)
        backend = loaded or load_backend(settings)
        _engines[key] = Engine(backend, Scheduler(backend, scheduler_config(settings, backend.device.kind)),
                               settings)
    return _engines[key]


@pytest.fixture(scope="session", params=BACKEND_NAMES)
def engine(request, empty_model_dir) -> Engine:
    """Each backend on the embedded tiny.en with the default scheduler, loaded once per session."""
    return engine_for(request.param, empty_model_dir)


@pytest.fixture(scope="session")
def named_engine(empty_model_dir):
    """An engine by name and settings (cached), for tests that need one in particular."""
    return lambda name, **env: engine_for(name, empty_model_dir, **env)


@pytest.fixture(scope="session")
def real(named_engine):
    """The real ctranslate2 engine on tiny.en, for tests that wrap it (tests/core/injection.py)."""
    return named_engine("ctranslate2").backend


@pytest.fixture(scope="session")
def marked(corpus, tmp_path_factory) -> Path:
    """corpus[7] with the marker injected faults pick out (tests/core/injection.py)."""
    from tests.core.injection import marked_copy

    return marked_copy(corpus[7].path, tmp_path_factory.mktemp("marked") / "marked.wav")
