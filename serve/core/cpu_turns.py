"""Who has the CPU: the transcription engine's calls and the speaker embedder's forward passes take turns.

On a CPU both want every core. Side by side they oversubscribe the cores
and each waits on the other's threads: a diarized 10-minute request on two
cores took 28.6-29.4 s (ctranslate2 on both, the embedder on one thread).
Taking turns, each call runs alone on every core and the same request takes
24.2-24.4 s, while the diarization still keeps up with the audio as it
arrives (bench/diarization.py ``--server-cost``, README). Turns are first
come, first served, so the scheduler's back-to-back engine calls cannot shut
the embedder out, nor the other way round. On a GPU nobody takes turns.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import nullcontext
from typing import ContextManager


class Turns:
    """A lock granted in the order it was asked for (``threading.Lock`` wakes any waiter, so a thread that
    releases it and asks again at once can keep it)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def __enter__(self) -> "Turns":
        me = object()
        with self._changed:
            self._queue.append(me)
            self._changed.wait_for(lambda: not self._held and self._queue[0] is me)
            self._queue.popleft()
            self._held = True
        return self

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    @property
    def held(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """Threads waiting for their turn."""
        with self._changed:
            return len(self._queue)


CPU = Turns()
"""This process's CPU cores: held by every engine call and every speaker-embedder forward pass on the CPU."""


def turn(device_kind: str) -> ContextManager:
    """What a call on ``device_kind`` ("cpu", "cuda") holds while it computes: the CPU's turn, or nothing."""
    return CPU if device_kind == "cpu" else nullcontext()
