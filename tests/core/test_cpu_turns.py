"""The CPU's turns are granted in the order they were asked for: back-to-back engine calls cannot shut the
speaker embedder out, nor the other way round."""

from __future__ import annotations

import threading
import time

from serve.core.cpu_turns import Turns, turn


def until(condition, limit_s: float = 30.0) -> None:
    """Wait for ``condition`` (a thread has queued): polled, bounded, never a measure of speed."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "a thread never queued for its turn"
        time.sleep(0.001)


def test_a_thread_that_gives_its_turn_back_and_asks_again_goes_behind_those_waiting():
    turns, order = Turns(), []

    def takes(name):
        with turns:
            order.append(name)

    threads = [threading.Thread(target=takes, args=(name,)) for name in ("embedder", "known speakers")]
    with turns:  # the engine's call
        for k, thread in enumerate(threads):
            thread.start()
            until(lambda: turns.waiting == k + 1)  # queued in this order
        assert order == [] and turns.held
    with turns:  # the engine's next call, asked for at once
        order.append("engine")
    for thread in threads:
        thread.join(30)
    assert order == ["embedder", "known speakers", "engine"] and not turns.held and turns.waiting == 0


def test_a_turn_is_given_back_when_the_call_raises():
    turns = Turns()
    try:
        with turns:
            raise RuntimeError("the engine failed")
    except RuntimeError:
        pass
    assert not turns.held
    with turns:  # and the next caller gets it
        assert turns.held


def test_only_the_cpu_takes_turns():
    assert turn("cpu") is turn("cpu") and isinstance(turn("cpu"), Turns)
    with turn("cuda"):
        assert not turn("cpu").held
