"""The periodic sampler: every WHISPER_METRICS_INTERVAL_S, the worker's state as gauges (and an EMF gauge line).

Queue depth and live sessions as last recorded, the worker's resident memory
(``/proc/self/statm``), and the GPU memory in use where the worker serves on
CUDA (``gpu_memory``, from the layer that knows the device). A daemon thread,
off every request's path.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from typing import Callable, Optional

from . import record

log = logging.getLogger(__name__)


def rss_bytes() -> Optional[int]:
    """This process's resident memory (Linux), or None where /proc is not there."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def gpu_memory_used() -> Optional[int]:
    """Bytes in use on this worker's GPU (all processes on it: what an out-of-memory error depends on).

    From torch where it already holds a CUDA context; else from ``nvidia-smi``, so that a ctranslate2
    worker does not create a torch context (hundreds of MB) just to be measured."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        return total - free
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    out = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", gpu],
                         capture_output=True, text=True, timeout=10).stdout
    return int(float(out.split()[0]) * 1024 * 1024) if out.split() else None


class Sampler:
    def __init__(self, interval_s: float, gpu_memory: Callable[[], Optional[int]] = lambda: None):
        self.interval_s = interval_s
        self.gpu_memory = gpu_memory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sample_now(self) -> record.Sample:
        try:
            gpu = self.gpu_memory()
        except Exception:  # noqa: BLE001 - a device that cannot say is not a reason to stop sampling
            gpu = None
        state = record.state
        return record.Sample(state.queued_windows, state.queued_audio_seconds, state.live_sessions,
                             rss_bytes(), gpu)

    def _run(self) -> None:
        while True:
            record.sample(self.sample_now())
            if self._stop.wait(self.interval_s):
                return
