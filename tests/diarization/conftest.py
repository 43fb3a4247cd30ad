"""The embedded speaker model, loaded once for the folder's tests (tracing it takes seconds).

Its torch runs one thread here: the suite shares a small machine, where two
threads per process fight (OpenMP's spinning) and cost several times the CPU.
"""

from __future__ import annotations

import pytest
import torch

from serve.diarization import embedded


@pytest.fixture(scope="session")
def embedder():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield embedded()
    torch.set_num_threads(threads)
