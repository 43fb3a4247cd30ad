"""``whisper-artifacts`` (``python -m serve.models``): make, convert, pack and inspect model artifacts.

- ``save NAME --backend B --out DIR``: download a named model in one backend's layout (needs network).
- ``import CT2_DIR --to openai|transformers --out DIR``: convert a CTranslate2 model offline, exactly.
- ``package DIR --out model.tar.gz``: the files at the archive root, as SageMaker extracts them.
- ``inspect DIR|model.tar.gz``: layout, backend, dimensions and files, and the diarization folder.
- ``add-diarization DIR --from PIPELINE_DIR``: a pyannote pipeline into DIR/diarization/ (``diarization.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import ArtifactError
from . import diarization
from .artifacts import BACKENDS, NAMED_MODELS, Layout, detect_layout, load_json


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
    """Convert a CTranslate2 Whisper directory offline (exact; see serve/models/convert.py)."""
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
    """(root, files) of a layout: the model's files (the diarization folder is ``diarization.files``)."""
    root = layout.path.parent if layout.backend == "openai" else layout.path
    if layout.backend == "openai":
        from .convert import ALIGNMENT_HEADS_FILE

        files = [layout.path] + ([root / ALIGNMENT_HEADS_FILE] if (root / ALIGNMENT_HEADS_FILE).is_file() else [])
    else:
        pyannote = set(diarization.files(root))
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and p not in pyannote and not any(
            part.startswith(".") for part in p.relative_to(root).parts)]
    return root, files


def package(model_dir: Path, out: Path) -> tuple[Layout, list[str]]:
    """Write ``out`` (.tar.gz) with the layout's files at the archive root, as SageMaker extracts it.

    The diarization folder (``model_dir/diarization/``) goes in as ``diarization/``, where the server looks.
    """
    layout = detect_layout(model_dir)
    if layout is None:
        raise ArtifactError(f"{model_dir} holds no model to package")
    root, files = layout_files(layout)
    members = [(path, path.relative_to(root).as_posix()) for path in files]
    members += [(path, path.relative_to(model_dir).as_posix()) for path in diarization.files(model_dir)]
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(out, "w:gz") as tar:
        for path, arcname in members:
            tar.add(path, arcname=arcname, recursive=False)
            names.append(arcname)
    return layout, names


def _describe(layout: Layout, model_dir: Optional[Path] = None) -> list[str]:
    lines = [f"backend:  {layout.backend}", f"model:    {layout.model_name}", f"path:     {layout.path}",
             f"why:      {layout.reason}"]
    dims = _dims(layout)
    if dims:
        lines.append("dims:     " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    root, files = layout_files(layout)
    lines.append("files:")
    lines += [f"  {p.relative_to(root).as_posix():<32} {_size(p.stat().st_size):>9}" for p in files]
    return lines + diarization.describe(model_dir or root, _size)


def _dims(layout: Layout) -> dict:
    """Model dimensions, read cheaply (config files / checkpoint header / model.bin)."""
    try:
        if layout.backend == "openai":
            import torch

            return dict(torch.load(layout.path, map_location="cpu", weights_only=True, mmap=True)["dims"])
        if layout.backend == "transformers":
            config = load_json(layout.path / "config.json")
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
                + [line.replace(tmp, "<archive>") for line in _describe(layout, Path(tmp))]
    layout = detect_layout(path)
    if layout is None:
        raise ArtifactError(f"{path} is empty or missing")
    return _describe(layout, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisper-artifacts",
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
    p = sub.add_parser("add-diarization", help="copy a pyannote pipeline folder into the artifact's diarization/")
    p.add_argument("artifact_dir", type=Path)
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="a pyannote.audio 4 pipeline folder: config.yaml with $model/ paths, and those folders")
    p.add_argument("--replace", action="store_true", help="overwrite an existing diarization/ folder")
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
        elif args.command == "add-diarization":
            written = diarization.add(args.artifact_dir, args.source, args.replace)
            lines = [f"wrote {args.artifact_dir / diarization.FOLDER}: a pyannote pipeline, {len(written)} files "
                     f"({_size(sum(p.stat().st_size for p in written))})"]
        else:
            lines = inspect(args.path)
    except ArtifactError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
