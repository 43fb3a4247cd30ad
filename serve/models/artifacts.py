"""Model artifacts: recognise the three layouts, strictly, and check the weights.

SageMaker extracts ``model.tar.gz`` into /opt/ml/model. What lies there decides
the backend (with WHISPER_BACKEND=auto), so recognition is strict and its
errors name the file that is missing or odd: a broken artifact should stop
the container at start, with a message the user can act on, not fail the
first request.

Layouts:
  openai        one ``*.pt`` checkpoint (``{"dims", "model_state_dict"}``), optional alignment_heads.json
  transformers  ``config.json`` (model_type whisper) + model.safetensors / pytorch_model.bin
                + preprocessor_config.json or processor_config.json + tokenizer files
  ctranslate2   ``model.bin`` + config.json + tokenizer.json (faster-whisper)

The layout may sit at the top or one folder down (a tarball packed with a
leading folder). README/LICENSE/*.md, hidden files and a SageMaker ``code/``
folder are ignored.

The CLI that makes, converts, packs and inspects them is ``serve.models.cli``
(``whisper-artifacts``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ArtifactError

BACKENDS = ("openai", "transformers", "ctranslate2")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_PROCESSOR = ("preprocessor_config.json", "processor_config.json")
HF_TOKENIZER = ("tokenizer.json", "vocab.json")
EXPECTED = ("expected one of: a *.pt openai-whisper checkpoint; a transformers directory (config.json, "
            "model.safetensors, preprocessor_config.json, tokenizer.json); a CTranslate2 directory "
            "(model.bin, config.json, tokenizer.json)")
NAMED_MODELS = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
                "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")


@dataclass(frozen=True)
class Layout:
    backend: str
    path: Path
    """The .pt file for openai; the directory for transformers and ctranslate2 (what the backend loads)."""
    model_name: str
    reason: str
    """Why this layout was chosen, in words (logged at start)."""


# ---- recognition --------------------------------------------------------------

def _ignored(path: Path) -> bool:
    name = path.name
    return (name.startswith(".") or name.lower().startswith(("readme", "license")) or name.endswith(".md")
            or (path.is_dir() and name == "code"))


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not _ignored(p))


def load_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} should hold a JSON object")
    return value


def _signals(files: set[str]) -> dict[str, list[str]]:
    """Which layouts the weight files of one directory point to."""
    found = {
        "openai": sorted(f for f in files if f.endswith(".pt")),
        "transformers": sorted(f for f in files if f in HF_WEIGHTS or
                               (f.startswith("model-") and f.endswith(".safetensors"))),
        "ctranslate2": ["model.bin"] if "model.bin" in files else [],
    }
    return {k: v for k, v in found.items() if v}


def _classify(directory: Path) -> Optional[Layout]:
    """The layout of the files directly in ``directory``; None when it holds no model file at all."""
    files = {p.name for p in _entries(directory) if p.is_file()}
    signals = _signals(files)
    if len(signals) > 1:
        described = "; ".join(f"{b}: {', '.join(f)}" for b, f in signals.items())
        raise ArtifactError(f"{directory} mixes model layouts ({described}); keep one model per directory")
    if not signals:
        if "config.json" in files:
            raise ArtifactError(f"{directory} has config.json but no weights: expected model.safetensors or "
                                f"pytorch_model.bin (transformers) or model.bin (CTranslate2)")
        return None
    backend, weights = next(iter(signals.items()))
    return {"openai": _openai, "transformers": _transformers, "ctranslate2": _ctranslate2}[backend](
        directory, files, weights)


def _openai(directory: Path, files: set[str], weights: list[str]) -> Layout:
    if len(weights) > 1:
        raise ArtifactError(f"{directory} holds several checkpoints ({', '.join(weights)}); keep exactly one *.pt")
    path = directory / weights[0]
    return Layout("openai", path, path.stem, f"{path.name} is an openai-whisper checkpoint")


def _transformers(directory: Path, files: set[str], weights: list[str]) -> Layout:
    if "config.json" not in files:
        raise ArtifactError(f"{directory} has {weights[0]} but no config.json")
    config = load_json(directory / "config.json")
    model_type = config.get("model_type")
    if model_type != "whisper":
        raise ArtifactError(f"{directory / 'config.json'} has model_type {model_type!r}, not 'whisper'")
    if not files & set(HF_PROCESSOR):
        raise ArtifactError(f"{directory} is a transformers model without preprocessor_config.json "
                            f"(the feature extractor); save the WhisperProcessor with the model")
    if not files & set(HF_TOKENIZER):
        raise ArtifactError(f"{directory} is a transformers model without tokenizer.json (or vocab.json + "
                            f"merges.txt); save the WhisperProcessor with the model")
    if "vocab.json" in files and "tokenizer.json" not in files and "merges.txt" not in files:
        raise ArtifactError(f"{directory} has vocab.json but no merges.txt")
    from .convert import guess_model_name

    name = str(config.get("_name_or_path") or "").strip() or guess_model_name(
        config.get("encoder_layers", 0), config.get("decoder_layers", 0), config.get("d_model", 0),
        config.get("vocab_size", 0)) or directory.name
    return Layout("transformers", directory, name,
                  f"{directory.name}/ has config.json (model_type whisper), {weights[0]} and a processor")


def _ctranslate2(directory: Path, files: set[str], weights: list[str]) -> Layout:
    if "config.json" not in files:
        raise ArtifactError(f"{directory} has model.bin but no config.json (CTranslate2 writes both)")
    if "tokenizer.json" not in files:
        hint = " (vocabulary.txt alone is not enough: faster-whisper would download tokenizer.json)" \
            if "vocabulary.txt" in files else ""
        raise ArtifactError(f"{directory} has model.bin but no tokenizer.json{hint}")
    config = load_json(directory / "config.json")
    if config.get("model_type"):
        raise ArtifactError(f"{directory} has model.bin but config.json is a transformers config "
                            f"(model_type {config['model_type']!r}); expected a CTranslate2 Whisper config")
    return Layout("ctranslate2", directory, _ct2_name(directory / "model.bin") or directory.name,
                  f"{directory.name}/ has model.bin, config.json and tokenizer.json (CTranslate2)")


def _ct2_name(model_bin: Path) -> Optional[str]:
    from .convert import guess_model_name, read_ct2_header

    spec, shapes = read_ct2_header(model_bin)
    if spec != "WhisperSpec":
        raise ArtifactError(f"{model_bin} is a CTranslate2 {spec}, not a Whisper model")
    def layers(side: str) -> int:
        return len({m.group(1) for n in shapes if (m := re.match(rf"{side}/layer_(\d+)/", n))})

    embeddings = shapes.get("decoder/embeddings/weight", (0, 0))
    return guess_model_name(layers("encoder"), layers("decoder"), embeddings[1], embeddings[0])


def detect_layout(model_dir: Path, check: bool = True) -> Optional[Layout]:
    """The layout in ``model_dir`` (or one folder down); None when it is missing or empty.

    ``check`` also opens the weights (see :func:`validate`), so a bad artifact fails here.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None
    entries = _entries(model_dir)
    if not entries:
        return None
    layout = _classify(model_dir)
    if layout is None:
        nested = [(d, found) for d in entries if d.is_dir() and (found := _classify(d)) is not None]
        if len(nested) > 1:
            raise ArtifactError(f"{model_dir} holds several models ({', '.join(d.name for d, _ in nested)}); "
                                f"keep one")
        if not nested:
            listing = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:12])
            raise ArtifactError(f"{model_dir} holds no model: found {listing}; {EXPECTED}")
        folder, layout = nested[0]
        layout = Layout(layout.backend, layout.path, layout.model_name,
                        f"{layout.reason}, in the folder {folder.name}/ of {model_dir}")
    if check:
        validate(layout)
    return layout


def layout_for_backend(model_dir: Path, backend: str) -> Optional[Layout]:
    """:func:`detect_layout`, insisting on ``backend`` (WHISPER_BACKEND); None when the directory is empty."""
    if backend not in BACKENDS:
        raise ArtifactError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    layout = detect_layout(model_dir)
    if layout is None or layout.backend == backend:
        return layout
    if layout.backend == "ctranslate2":
        fix = (f"run `whisper-artifacts import {model_dir} --to {backend} --out DIR` to convert it, "
               f"or set WHISPER_BACKEND=ctranslate2")
    else:
        fix = (f"run `whisper-artifacts save NAME --backend {backend} --out DIR` to get that layout, "
               f"or set WHISPER_BACKEND={layout.backend}")
    weights = {"openai": layout.path.name, "ctranslate2": "model.bin"}.get(layout.backend) or next(
        (w for w in HF_WEIGHTS if (layout.path / w).is_file()), "model.safetensors")
    raise ArtifactError(f"WHISPER_BACKEND={backend} but {model_dir} holds a {layout.backend} model "
                        f"({weights}); {fix}")


def validate(layout: Layout) -> Layout:
    """Open the weights far enough to know they are what the layout claims (cheap: mmap / header only)."""
    if layout.backend == "openai":
        _validate_checkpoint(layout.path)
    elif layout.backend == "ctranslate2":
        _validate_model_bin(layout.path / "model.bin")
    else:
        weights = [layout.path / w for w in HF_WEIGHTS if (layout.path / w).is_file()]
        if weights and weights[0].stat().st_size == 0:
            raise ArtifactError(f"{weights[0]} is empty")
    return layout


def _validate_checkpoint(path: Path) -> None:
    import torch

    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ArtifactError(f"{path} is not a loadable torch checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= set(checkpoint):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ArtifactError(f"{path} is not an openai-whisper checkpoint: expected the keys dims and "
                            f"model_state_dict, found {keys}")


def _validate_model_bin(path: Path) -> None:
    from .convert import read_ct2_header

    spec, shapes = read_ct2_header(path)  # walks every variable header: catches truncation
    if spec != "WhisperSpec":
        raise ArtifactError(f"{path} is a CTranslate2 {spec}, not a Whisper model")
    if "decoder/embeddings/weight" not in shapes:
        raise ArtifactError(f"{path} has no decoder/embeddings/weight: not a Whisper model")
