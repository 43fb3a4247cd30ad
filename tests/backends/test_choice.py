"""Which artifact and backend the settings pick, and why (no model is loaded here)."""

from __future__ import annotations

import shutil

import pytest

from serve.backends import choose_artifact
from serve.models.default_model import embedded_ct2_dir
from serve.errors import ArtifactError
from tests.conftest import backend_settings


@pytest.fixture
def ct2_dir(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(embedded_ct2_dir(), target)
    return target


def test_auto_reads_the_layout_and_says_why(ct2_dir):
    backend, path, name, why = choose_artifact(backend_settings("auto", ct2_dir))
    assert backend == "ctranslate2" and path == ct2_dir
    assert "model.bin" in why


def test_auto_with_no_artifact_serves_the_embedded_default_on_ctranslate2(empty_model_dir):
    backend, path, name, why = choose_artifact(backend_settings("auto", empty_model_dir))
    assert (backend, name) == ("ctranslate2", "tiny.en")
    assert "embedded" in why and (path / "model.bin").is_file()


def test_hf_model_id_goes_to_the_transformers_backend(empty_model_dir):
    settings = backend_settings("auto", empty_model_dir, HF_MODEL_ID="openai/whisper-small")
    backend, path, name, why = choose_artifact(settings)
    assert (backend, path, name) == ("transformers", "openai/whisper-small", "openai/whisper-small")
    assert "HF_MODEL_ID" in why


def test_hf_model_id_with_another_backend_is_refused(empty_model_dir):
    settings = backend_settings("openai", empty_model_dir, HF_MODEL_ID="openai/whisper-small")
    with pytest.raises(ValueError, match="HF_MODEL_ID"):
        choose_artifact(settings)


def test_a_model_directory_wins_over_hf_model_id(ct2_dir):
    backend, path, _, _ = choose_artifact(backend_settings("auto", ct2_dir, HF_MODEL_ID="openai/whisper-small"))
    assert (backend, path) == ("ctranslate2", ct2_dir)


def test_backend_that_does_not_match_the_artifact_says_how_to_convert(ct2_dir):
    with pytest.raises(ArtifactError) as err:
        choose_artifact(backend_settings("openai", ct2_dir))
    assert "ctranslate2" in err.value.message and "import" in err.value.message
