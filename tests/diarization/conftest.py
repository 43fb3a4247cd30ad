"""The embedded speaker model, loaded once for the folder's tests (exporting it to onnxruntime takes seconds).

It runs one thread here: the suite shares a small machine, where two
threads per process fight (OpenMP's spinning) and cost several times the CPU.
"""

from __future__ import annotations

import pytest

from serve.diarization import embedded


@pytest.fixture(scope="session")
def embedder():
    return embedded(threads=1)
