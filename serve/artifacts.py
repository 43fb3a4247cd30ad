"""Model artifacts: recognise the three layouts, and the CLI that makes, converts and packs them.

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

CLI: ``python -m serve.artifacts save|import|package|inspect ...`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ArtifactError

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


def _load_json(path: Path) -> dict:
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
    config = _load_json(directory / "config.json")
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
    config = _load_json(directory / "config.json")
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
        fix = (f"run `python -m serve.artifacts import {model_dir} --to {backend} --out DIR` to convert it, "
               f"or set WHISPER_BACKEND=ctranslate2")
    else:
        fix = (f"run `python -m serve.artifacts save NAME --backend {backend} --out DIR` to get that layout, "
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


# ---- CLI ------------------------------------------------------------------------

def save(name: str, backend: str, out: Path) -> Layout:
    """Download a named model (or hub id) in ``backend``'s layout into ``out``. Needs network access."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        if backend == "openai":
            import whisper

            model_name = "large-v3-turbo" if name == "turbo" else name
            if model_name not in whisper._MODELS:
                raise ArtifactError(f"unknown openai-whisper model {name!r}; one of {', '.join(whisper._MODELS)}")
            whisper._download(whisper._MODELS[model_name], str(out), False)
            from .convert import ALIGNMENT_HEADS_FILE, decode_alignment_heads

            (out / ALIGNMENT_HEADS_FILE).write_text(json.dumps(decode_alignment_heads(
                whisper._ALIGNMENT_HEADS[model_name])) + "\n")
        elif backend == "transformers":
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            repo = name if "/" in name else f"openai/whisper-{name}"
            WhisperForConditionalGeneration.from_pretrained(repo).save_pretrained(out)
            processor = WhisperProcessor.from_pretrained(repo)
            processor.save_pretrained(out)
            processor.feature_extractor.to_json_file(out / "preprocessor_config.json")
        else:
            from faster_whisper import download_model

            download_model(name, output_dir=str(out))
    except ArtifactError:
        raise
    except Exception as exc:  # network, hub and HTTP errors come in many types
        raise ArtifactError(f"could not download {name!r} for {backend} (needs network access to the "
                            f"model hub): {type(exc).__name__}: {exc}") from None
    layout = detect_layout(out)
    if layout is None:
        raise ArtifactError(f"downloading {name!r} left {out} empty")
    return layout


def import_ct2(ct2_dir: Path, to: str, out: Path, dtype: str) -> Layout:
    """Convert a CTranslate2 Whisper directory offline (exact; see serve/convert.py)."""
    from . import convert

    source = detect_layout(ct2_dir)
    if source is None or source.backend != "ctranslate2":
        raise ArtifactError(f"{ct2_dir} is not a CTranslate2 model directory"
                            + (f" (it holds a {source.backend} model)" if source else " (it is empty)"))
    if to == "openai":
        convert.ct2_to_openai(source.path, out / f"{source.model_name}.pt", dtype=dtype)
    else:
        convert.ct2_to_transformers(source.path, out, dtype=dtype)
    return detect_layout(out)


def layout_files(layout: Layout) -> tuple[Path, list[Path]]:
    """(root, files) of a layout: what goes into model.tar.gz."""
    root = layout.path.parent if layout.backend == "openai" else layout.path
    if layout.backend == "openai":
        from .convert import ALIGNMENT_HEADS_FILE

        files = [layout.path] + ([root / ALIGNMENT_HEADS_FILE] if (root / ALIGNMENT_HEADS_FILE).is_file() else [])
    else:
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(root).parts)]
    return root, files


def package(model_dir: Path, out: Path) -> tuple[Layout, list[str]]:
    """Write ``out`` (.tar.gz) with the layout's files at the archive root, as SageMaker extracts it."""
    layout = detect_layout(model_dir)
    if layout is None:
        raise ArtifactError(f"{model_dir} holds no model to package")
    root, files = layout_files(layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(out, "w:gz") as tar:
        for path in files:
            arcname = path.relative_to(root).as_posix()
            tar.add(path, arcname=arcname, recursive=False)
            names.append(arcname)
    return layout, names


def _describe(layout: Layout) -> list[str]:
    lines = [f"backend:  {layout.backend}", f"model:    {layout.model_name}", f"path:     {layout.path}",
             f"why:      {layout.reason}"]
    dims = _dims(layout)
    if dims:
        lines.append("dims:     " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    root, files = layout_files(layout)
    lines.append("files:")
    lines += [f"  {p.relative_to(root).as_posix():<32} {_size(p.stat().st_size):>9}" for p in files]
    return lines


def _dims(layout: Layout) -> dict:
    """Model dimensions, read cheaply (config files / checkpoint header / model.bin)."""
    try:
        if layout.backend == "openai":
            import torch

            return dict(torch.load(layout.path, map_location="cpu", weights_only=True, mmap=True)["dims"])
        if layout.backend == "transformers":
            config = _load_json(layout.path / "config.json")
            keys = ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers",
                    "encoder_attention_heads", "decoder_attention_heads")
            return {k: config[k] for k in keys if k in config}
        from .convert import dims_of, read_ct2_model
        from dataclasses import asdict

        return asdict(dims_of(read_ct2_model(layout.path / "model.bin")))
    except ArtifactError:
        raise
    except Exception:  # dims are informative only
        return {}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def inspect(path: Path) -> list[str]:
    """Lines describing a model directory or a model.tar.gz (extracted to a temp dir and checked)."""
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar"))):
        with tarfile.open(path) as tar, tempfile.TemporaryDirectory(prefix="inspect-") as tmp:
            members = tar.getmembers()
            tar.extractall(tmp, filter="data")
            layout = detect_layout(Path(tmp))
            if layout is None:
                raise ArtifactError(f"{path} is empty")
            top = sorted({m.name.split("/")[0] for m in members})
            where = "at the archive root" if layout.path.parent == Path(tmp) or layout.path == Path(tmp) \
                else f"inside the folder {top[0]}/ (SageMaker will extract it one level down; still accepted)"
            return [f"archive:  {path} ({_size(path.stat().st_size)}, {len(members)} members, model {where})"] \
                + [line.replace(tmp, "<archive>") for line in _describe(layout)]
    layout = detect_layout(path)
    if layout is None:
        raise ArtifactError(f"{path} is empty or missing")
    return _describe(layout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve.artifacts",
                                     description="Make, convert, pack and inspect Whisper model artifacts.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save", help="download a named model in one backend's layout (needs network)")
    p.add_argument("name", help=f"a model name ({', '.join(NAMED_MODELS)}) or a hub id")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("import", help="convert a CTranslate2 Whisper directory (offline, exact)")
    p.add_argument("ct2_dir", type=Path)
    p.add_argument("--to", required=True, choices=("openai", "transformers"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p = sub.add_parser("package", help="write model.tar.gz with the files at the archive root")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("inspect", help="describe a model directory or model.tar.gz")
    p.add_argument("path", type=Path)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "save":
            lines = _describe(save(args.name, args.backend, args.out))
        elif args.command == "import":
            lines = _describe(import_ct2(args.ct2_dir, args.to, args.out, args.dtype))
        elif args.command == "package":
            layout, names = package(args.model_dir, args.out)
            lines = [f"wrote {args.out} ({_size(args.out.stat().st_size)}): {layout.backend} model "
                     f"{layout.model_name}, {len(names)} files at the archive root"]
        else:
            lines = inspect(args.path)
    except ArtifactError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
