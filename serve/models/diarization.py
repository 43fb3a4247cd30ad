"""A pyannote pipeline in the model artifact: its ``diarization/`` folder, checked, copied and described.

``whisper-artifacts add-diarization ARTIFACT_DIR --from PIPELINE_DIR`` copies a
pyannote.audio 4 pipeline folder (as pyannote's speaker-diarization-community-1
is laid out: ``config.yaml`` beside ``segmentation/``, ``embedding/`` and
``plda/``) into ``ARTIFACT_DIR/diarization/``, where the server's pyannote
engine loads it with ``Pipeline.from_pretrained(<folder>)``.

Nothing may be downloaded where the server runs, so the config is checked first:
its ``segmentation``, ``embedding`` and ``plda`` must each be ``$model/<folder>``
(pyannote's own way to name a folder beside config.yaml) holding that model's
files. A hub id (``pyannote/wespeaker-voxceleb-resnet34-LM``), a path outside the
folder, or a missing entry (pyannote would fall back to a hub default) is refused.
The PLDA is required even where clustering would not use it: pyannote 4 always
loads it. ``$model/...`` also keeps pyannote from choosing the embedding's loader
by words in a path (``wespeaker``, ``speechbrain``, ``nvidia``): it then loads the
folder's checkpoint as a pyannote model.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..diarization.engine import FOLDER
from ..errors import ArtifactError

CONFIG = "config.yaml"
PIPELINES = ("pyannote.audio.pipelines.SpeakerDiarization",
             "pyannote.audio.pipelines.speaker_diarization.SpeakerDiarization")
REQUIRED = {"segmentation": ("pytorch_model.bin",), "embedding": ("pytorch_model.bin",),
            "plda": ("xvec_transform.npz", "plda.npz")}
"""pipeline.params entry -> the files its folder must hold (what pyannote 4 opens there)."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def read_config(folder: Path) -> dict:
    import yaml

    path = Path(folder) / CONFIG
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a pyannote pipeline folder: it has no {CONFIG}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{path} is not readable YAML: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("pipeline"), dict):
        raise ArtifactError(f"{path} has no 'pipeline' section: not a pyannote pipeline config")
    return config


def check_pipeline(folder: Path) -> dict[str, str]:
    """{entry: sub-folder} of a pyannote pipeline folder that loads without network; else ArtifactError saying why."""
    folder = Path(folder)
    config = read_config(folder)
    path = folder / CONFIG
    name = config["pipeline"].get("name")
    if name not in PIPELINES:
        raise ArtifactError(f"{path} names the pipeline {name!r}; the server runs pyannote's "
                            f"{PIPELINES[0]} (other pipelines, pyannoteAI's hosted ones among them, are not offline)")
    params = config["pipeline"].get("params") or {}
    found = {}
    for entry, files in REQUIRED.items():
        value = params.get(entry)
        where = f"{path}: pipeline.params.{entry}"
        if value is None:
            raise ArtifactError(f"{where} is not set, and pyannote would then download its default from the hub; "
                                f"set it to $model/{entry} with the model's files in {entry}/")
        if not isinstance(value, str):
            raise ArtifactError(f"{where} is {value!r}; expected $model/<folder> (a folder beside {CONFIG})")
        if not value.startswith("$model/"):
            if HUB_ID.match(value) and not (folder / value).exists() and not Path(value).is_absolute():
                raise ArtifactError(f"{where} is the hub id {value!r}: nothing may be downloaded where the "
                                    f"server runs; put that model's files in {entry}/ and write $model/{entry}")
            raise ArtifactError(f"{where} is {value!r}; name a folder beside {CONFIG} as $model/<folder> "
                                "(a path outside the pipeline folder does not exist in the container)")
        sub = value[len("$model/"):]
        if "@" in sub or not sub or Path(sub).is_absolute() or ".." in Path(sub).parts:
            raise ArtifactError(f"{where} is {value!r}; expected $model/<folder> with a folder inside the "
                                "pipeline folder (no revision, no '..')")
        missing = [f for f in files if not (folder / sub / f).is_file()]
        if missing:
            raise ArtifactError(f"{where} is {value!r}, but {folder / sub} lacks {', '.join(missing)}")
        found[entry] = sub
    return found


def _copied(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts)]


def add(artifact_dir: Path, source: Path, replace: bool = False) -> list[Path]:
    """Copy the pipeline folder ``source`` into ``artifact_dir/diarization/``; the files written."""
    artifact_dir, source = Path(artifact_dir), Path(source)
    if not artifact_dir.is_dir():
        raise ArtifactError(f"{artifact_dir} is not a directory (the model artifact's folder)")
    check_pipeline(source)
    target = artifact_dir / FOLDER
    if source.resolve() == target.resolve():
        raise ArtifactError(f"{source} is already the artifact's {FOLDER}/ folder")
    if target.exists():
        if not replace:
            raise ArtifactError(f"{target} exists; pass --replace to overwrite it")
        shutil.rmtree(target)
    staging = artifact_dir / f".{FOLDER}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for path in _copied(source):  # hidden files (a hub cache's .git, .cache) stay behind
        dest = staging / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    staging.rename(target)  # all or nothing: a half-copied folder never looks like a pipeline
    return _copied(target)


def files(root: Path) -> list[Path]:
    """The diarization folder's files under a model root (empty where there is none): what model.tar.gz carries."""
    folder = Path(root) / FOLDER
    return _copied(folder) if folder.is_dir() else []


def describe(root: Path, size) -> list[str]:
    """Lines for ``inspect``: the artifact's diarization folder, present or not, and its files."""
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        return [f"diarization: none (no {FOLDER}/ folder; the server diarizes with its embedded model)"]
    try:
        found = check_pipeline(folder)
        status = "pyannote pipeline, " + ", ".join(f"{k} {v}/" for k, v in found.items())
    except ArtifactError as exc:
        status = f"NOT USABLE: {exc.message}"
    lines = [f"diarization: {FOLDER}/ ({status})"]
    lines += [f"  {p.relative_to(root).as_posix():<32} {size(p.stat().st_size):>9}" for p in _copied(folder)]
    return lines
