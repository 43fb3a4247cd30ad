"""Scaling targets from a measured capacity: a bench/throughput.py result or a hand-written target."""

from __future__ import annotations

import json

import pytest

from deploy import capacity
from deploy.limits import LimitError


def bench_result(*rows: tuple[str, float, dict[int, float]], device: str = "cpu") -> dict:
    """The shape `bench/throughput.py run --json FILE` writes (json turns the client counts into strings)."""
    return json.loads(json.dumps({"device": device, "batch": 8, "rows": [
        {"server": {"backend": backend, "latency_ms_median": 975.0, "seq_rtf": seq, "concurrent_rtf": concurrent,
                    "long_rtf": 21.1},
         "raw": {"engine_ms_median": 747.0}}
        for backend, seq, concurrent in rows]}))


# The README's ctranslate2 CPU row: 3.8 one by one, x1.69 / x2.05 / x2.44 at 4 / 8 / 16 clients.
STILL_GROWING = ("ctranslate2", 3.8, {4: 6.42, 8: 7.79, 16: 9.27})
# A server that saturates at 4 clients: 8 and 16 add nothing but waiting.
SATURATED = ("openai", 2.0, {4: 7.0, 8: 7.5, 16: 7.6})


def _write(tmp_path, data) -> str:
    path = tmp_path / "target.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_concurrency_is_the_knee_of_the_throughput_curve(tmp_path):
    path = _write(tmp_path, bench_result(STILL_GROWING, SATURATED))
    growing = capacity.from_file(path, "concurrency", backend="ctranslate2")
    saturated = capacity.from_file(path, "concurrency", backend="openai")
    assert (growing.signal, growing.value) == ("concurrency", 16.0)  # 8 clients reach only 84% of 9.27
    assert saturated.value == 4.0  # 7.0 >= 0.9 x 7.6
    assert "best 7.6 audio s/s at 16 clients" in saturated.reason and "openai on cpu" in saturated.reason


def test_the_readme_examples(tmp_path):
    """The two rows README's "Scaling and alarms" works through by hand."""
    path = _write(tmp_path, bench_result(STILL_GROWING, ("openai", 20.0, {4: 72.0, 8: 76.0, 16: 78.0})))
    assert capacity.from_file(path, "concurrency", backend="ctranslate2").value == 16.0
    assert capacity.from_file(path, "concurrency", backend="openai").value == 4.0


def test_queued_audio_is_throughput_times_wait_per_worker(tmp_path):
    path = _write(tmp_path, bench_result(SATURATED))
    assert capacity.from_file(path, "queued-audio", max_wait_s=10).value == 76.0
    assert capacity.from_file(path, "queued-audio", max_wait_s=10, workers=4).value == 19.0
    assert capacity.from_file(path, "queued-audio", max_wait_s=30, workers=4).value == 57.0


def test_hand_written_target(tmp_path):
    path = _write(tmp_path, {"metric": "queued-audio", "target": 45})
    assert capacity.from_file(path, "queued-audio") == capacity.Target("queued-audio", 45.0, f"from {path}")


@pytest.mark.parametrize("data, signal, kwargs, message", [
    ({"metric": "concurrency", "target": 6}, "queued-audio", {}, "not for --scale-on queued-audio"),
    ({"metric": "concurrency", "target": 0}, "concurrency", {}, "greater than 0"),
    ({"metric": "concurrency", "target": "6"}, "concurrency", {}, "greater than 0"),
    ({"target": 6}, "concurrency", {}, "neither"),
    (bench_result(STILL_GROWING), "invocations", {}, "not invocations"),
    (bench_result(STILL_GROWING, SATURATED), "concurrency", {}, "choose one with --bench-backend"),
    (bench_result(STILL_GROWING), "concurrency", {"backend": "transformers"}, "no row for backend 'transformers'"),
    (bench_result(STILL_GROWING), "queued-audio", {"max_wait_s": 0}, "--max-wait must be > 0"),
    (bench_result(("ctranslate2", 0.0, {4: 1.0})), "concurrency", {}, "throughput of 0"),
    ({"device": "cpu", "rows": [{"server": {"backend": "x"}}]}, "concurrency", {}, "lacks seq_rtf"),
])
def test_what_cannot_give_a_target_is_refused(tmp_path, data, signal, kwargs, message):
    with pytest.raises(LimitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        capacity.from_file(_write(tmp_path, data), signal, **kwargs)


def test_unreadable_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LimitError, match="readable JSON"):
        capacity.from_file(str(tmp_path / "bad.json"), "concurrency")
    with pytest.raises(LimitError, match="readable JSON"):
        capacity.from_file(str(tmp_path / "missing.json"), "concurrency")
