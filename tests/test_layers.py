"""The floors of serve/ import only downwards: http -> live -> core -> (nothing of backends); backends -> core.

``serve/metrics`` is below them all: every floor records events through it, and it knows none of them.
``serve/diarization`` sits beside the backends: an engine of its own that
may use core's result types and its CPU turns, never the scheduler or the doors.

``serve/core`` owns the engine interface it calls (``core/engine.py``);
backends implement it. A module of core that named a backend would tie the
scheduler to an engine, and a loop between floors would make neither
readable alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[1] / "serve"

FORBIDDEN = {
    "core": ("serve.backends", "serve.http", "serve.models", "serve.live"),
    "live": ("serve.http", "serve.backends", "serve.models", "serve.core.scheduler", "serve.core.runtime"),
    "backends": ("serve.http",),
    "models": ("serve.http", "serve.core.scheduler", "serve.core.runtime"),
    "metrics": ("serve.http", "serve.core", "serve.live", "serve.backends", "serve.models", "serve.diarization"),
    "diarization": ("serve.http", "serve.live", "serve.backends", "serve.models", "serve.core.scheduler",
                    "serve.core.runtime"),
}
"""Floor (a folder of serve/) -> what none of its modules may import."""


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names (functions' bodies included)."""
    package = ".".join(path.relative_to(SERVE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_no_floor_imports_upwards(floor):
    offending = {}
    for path in sorted((SERVE / floor).rglob("*.py")):
        bad = sorted(n for n in imported(path) if n.startswith(FORBIDDEN[floor]))
        if bad:
            offending[str(path.relative_to(SERVE.parent))] = bad
    assert not offending, f"serve/{floor} imports what it must not: {offending}"


def test_the_check_sees_relative_and_late_imports(tmp_path):
    """The checker itself: a relative import inside a function is found and resolved."""
    module = SERVE / "core" / "_probe_for_test_layers.py"
    module.write_text("def f():\n    from ..backends import load_backend\n    from . import job\n")
    try:
        assert {"serve.backends", "serve.backends.load_backend", "serve.core.job"} <= imported(module)
    finally:
        module.unlink()
