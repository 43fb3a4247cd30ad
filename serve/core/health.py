"""Whether this worker's engine can still serve: what /ping reports, so that a broken worker is replaced.

An engine can stop serving without the process dying: a CUDA error such as
an illegal memory access or a device-side assert leaves the CUDA context
unusable; out-of-memory that even a single window hits again and again; an
engine call that never returns; an inference thread that died. Each turns
``Health`` bad for good, with the reason. The scheduler then fails its
requests with a 503 (a retry, elsewhere or after the restart, can succeed)
and /ping answers 503, so SageMaker (or gunicorn, whose worker exits)
replaces what is broken.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

OOM_STREAK = 3
"""Single-window engine calls in a row that ran out of memory: past this, the engine is unhealthy.
(A batch that runs out of memory is halved first; a single window that still does fails its request.)"""

_OOM = re.compile(r"out of memory|std::bad_alloc|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
_FATAL = re.compile(r"CUDA error|CUDA failed|illegal memory access|device-side assert|CUBLAS_STATUS|"
                    r"CUDNN_STATUS|cuDNN error|NCCL error|unspecified launch failure", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or bool(_OOM.search(str(exc)))


def is_fatal(exc: BaseException) -> bool:
    """An error after which the device cannot be trusted (the CUDA context is lost), whatever the input."""
    return not is_out_of_memory(exc) and bool(_FATAL.search(str(exc)))


class Health:
    """The engine's health: bad for good once a fatal error, an OOM streak, a hung call or a dead thread is seen."""

    def __init__(self, engine_timeout_s: float, on_fail: Callable[[str], None]):
        self.engine_timeout_s = engine_timeout_s
        self.problem: Optional[str] = None
        """Why the engine can no longer serve (None: it can)."""
        self._on_fail = on_fail
        self._oom_streak = 0
        self._call_started: Optional[float] = None
        self._cond = threading.Condition()
        self._stopped = False
        self._watchdog = threading.Thread(target=self._watch, name="engine-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, reason: str) -> None:
        with self._cond:
            if self.problem is not None:
                return
            self.problem = reason
            self._cond.notify_all()
        log.error("the engine can no longer serve: %s", reason)
        self._on_fail(reason)

    # --- what the inference thread reports ----------------------------------------------------

    def call_started(self) -> None:
        with self._cond:
            self._call_started = time.monotonic()
            self._cond.notify_all()

    def call_ended(self) -> None:
        with self._cond:
            self._call_started = None

    def succeeded(self) -> None:
        self._oom_streak = 0

    def engine_error(self, exc: BaseException, single_window: bool) -> None:
        """An engine call raised: fatal errors and repeated out-of-memory on one window end the engine's health."""
        if is_fatal(exc):
            self.fail(f"the engine hit a device error ({type(exc).__name__}: {exc}); the worker must restart")
        elif is_out_of_memory(exc) and single_window:
            self._oom_streak += 1
            if self._oom_streak >= OOM_STREAK:
                self.fail(f"the engine ran out of memory on a single window {self._oom_streak} times in a row "
                          f"({exc})")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # --- the watchdog -------------------------------------------------------------------------

    def _watch(self) -> None:
        """An engine call running past ``engine_timeout_s`` is hung (native code cannot be interrupted)."""
        with self._cond:
            while not self._stopped and self.problem is None:
                if self._call_started is None:
                    self._cond.wait()
                    continue
                remaining = self._call_started + self.engine_timeout_s - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                running = time.monotonic() - self._call_started
                break
            else:
                return
        self.fail(f"an engine call has run for {running:.0f} s, past WHISPER_ENGINE_TIMEOUT_S="
                  f"{self.engine_timeout_s:g}; it is hung")
