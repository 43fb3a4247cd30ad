"""Fixtures of the scheduler's tests: a scheduler run over a wrapped real engine (tests/core/injection.py)."""

from __future__ import annotations

import pytest

from tests.core.injection import Run


@pytest.fixture
def run(tmp_path):
    """``run(engine, **config)``: a new scheduler over ``engine``, stopped after the test."""
    runs: list[Run] = []

    def make(engine, **config) -> Run:
        runs.append(Run(engine, tmp_path, **config))
        return runs[-1]

    yield make
    for r in runs:
        r.close()
