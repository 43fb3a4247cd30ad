"""The embedded speaker model, loaded once for the folder's tests (tracing it takes seconds)."""

from __future__ import annotations

import pytest

from serve.diarization import embedded


@pytest.fixture(scope="session")
def embedder():
    return embedded()
