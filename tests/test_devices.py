"""Device choice and GPU pinning, whose GPU side can't run here: their logic, on CPU."""

from __future__ import annotations

import importlib
import os
import sys
from types import SimpleNamespace

import pytest

from serve import backends
from serve.settings import Settings


def _settings(**env: str) -> Settings:
    return Settings.from_env(env)


@pytest.mark.parametrize("backend,gpus,expected", [
    ("ctranslate2", 0, ("cpu", "int8")),
    ("openai", 0, ("cpu", "float32")),
    ("transformers", 0, ("cpu", "float32")),
    ("ctranslate2", 1, ("cuda", "float16")),
    ("openai", 2, ("cuda", "float16")),
])
def test_auto_device_is_cuda_fp16_when_present(monkeypatch, backend, gpus, expected):
    monkeypatch.setattr(backends, "cuda_device_count", lambda: gpus)
    device = backends.resolve_device(_settings(), backend)
    assert (device.kind, device.compute_type) == expected
    assert device.cpu_threads >= 1


def test_explicit_device_and_index(monkeypatch):
    monkeypatch.setattr(backends, "cuda_device_count", lambda: 0)
    device = backends.resolve_device(_settings(WHISPER_DEVICE="cuda:1"), "openai")
    assert (device.kind, device.index, device.torch_device) == ("cuda", 1, "cuda:1")


@pytest.mark.parametrize("env,backend,words", [
    ({"WHISPER_COMPUTE_TYPE": "int8"}, "openai", "for ctranslate2"),
    ({"WHISPER_DEVICE": "cpu", "WHISPER_COMPUTE_TYPE": "float16"}, "transformers", "needs a GPU"),
])  # WHISPER_DEVICE=tpu no longer gets this far: Settings refuses it (tests/test_settings.py)
def test_impossible_device_settings_are_refused(env, backend, words):
    with pytest.raises(ValueError, match=words):
        backends.resolve_device(_settings(**env), backend)


def _gunicorn_conf(monkeypatch, **env):
    # post_fork and the module itself write these: register them so monkeypatch restores them
    for name in ("CUDA_VISIBLE_DEVICES", "SAGEMAKER_MODEL_SERVER_WORKERS", "WHISPER_DEVICE", "WHISPER_CPU_THREADS",
                 "WHISPER_WORKER_SLOT", "WHISPER_SERVER_WORKERS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.path.insert(0, "container")
    try:
        sys.modules.pop("gunicorn_conf", None)
        return importlib.import_module("gunicorn_conf")
    finally:
        sys.path.remove("container")
        sys.modules.pop("gunicorn_conf", None)


def _fork(conf, server):
    worker = SimpleNamespace(pid=1000 + len(server.WORKERS))
    conf.pre_fork(server, worker)
    server.WORKERS[worker.pid] = worker
    return worker


def test_one_worker_per_gpu_each_pinned_to_its_own(monkeypatch):
    conf = _gunicorn_conf(monkeypatch, CUDA_VISIBLE_DEVICES="0,1,2,3")
    assert conf.workers == 4 and conf.PIN_GPUS
    server = SimpleNamespace(WORKERS={}, log=SimpleNamespace(info=lambda *a: None))
    pinned = []
    for _ in range(4):
        worker = _fork(conf, server)
        conf.post_fork(server, worker)
        pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
        assert os.environ["WHISPER_DEVICE"] == "cuda:0"
    assert sorted(pinned) == ["0", "1", "2", "3"]

    # A crashed worker is replaced on the GPU it left free.
    gone = next(w for w in server.WORKERS.values() if w.slot == 2)
    del server.WORKERS[gone.pid]
    replacement = _fork(conf, server)
    conf.post_fork(server, replacement)
    assert replacement.slot == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == "2"


def test_cpu_defaults_to_one_worker_and_splits_cores_when_more(monkeypatch):
    conf = _gunicorn_conf(monkeypatch, CUDA_VISIBLE_DEVICES="-1")
    assert conf.workers == 1 and not conf.PIN_GPUS
    conf = _gunicorn_conf(monkeypatch, CUDA_VISIBLE_DEVICES="-1", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    server = SimpleNamespace(WORKERS={}, log=SimpleNamespace(info=lambda *a: None))
    worker = _fork(conf, server)
    conf.post_fork(server, worker)
    assert os.environ["WHISPER_CPU_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert conf.timeout == 3600 and conf.graceful_timeout == 25
