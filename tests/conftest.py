"""Shared fixtures: the espeak-ng corpus, and each backend loaded once on the real tiny.en."""

from __future__ import annotations

import os
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


_loaded: dict = {}


@pytest.fixture(scope="session", params=BACKEND_NAMES)
def backend(request, empty_model_dir):
    """Each backend on the embedded tiny.en, loaded once per session."""
    from serve.backends import load_backend

    name = request.param
    if name not in _loaded:
        _loaded[name] = load_backend(backend_settings(name, empty_model_dir))
    return _loaded[name]


@pytest.fixture(scope="session")
def load_named_backend(empty_model_dir):
    """Load a backend by name (cached), for tests that need one in particular."""
    from serve.backends import load_backend

    def load(name: str):
        if name not in _loaded:
            _loaded[name] = load_backend(backend_settings(name, empty_model_dir))
        return _loaded[name]

    return load
