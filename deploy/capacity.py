"""Scaling targets from a measured capacity, not a guess.

Why a module of its own: the number a target-tracking policy holds is the whole
policy, and it should come from what one instance was measured to do. Two inputs
are read from ``--target-from FILE``:

* ``{"metric": "concurrency", "target": 8}``: a target chosen by hand (any signal);
* the JSON ``bench/throughput.py run --json FILE`` writes (``make bench`` on the
  instance type you deploy): ``{"device", "batch", "rows": [{"server": {...},
  "raw": {...}}]}``, one row per backend. From the server's figures:

  - ``concurrency``: the fewest concurrent clients at which the server reached
    ``KNEE`` of its best measured throughput (``seq_rtf`` for one client,
    ``concurrent_rtf[n]`` for n). Past that point more requests in flight only
    wait, so holding each instance there keeps it busy without a queue.
  - ``queued-audio``: the audio a worker may hold queued and still start it
    within ``max_wait_s``: best throughput (audio seconds per second, the whole
    instance) x max_wait_s / workers per instance (each worker has its own queue
    and writes its own gauge, and the policy averages them).

Invocations per minute are not derived: one invocation is 3 s or 3 hours of
audio, which is why the other two signals exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .limits import LimitError

SIGNALS = ("invocations", "concurrency", "queued-audio")
KNEE = 0.9
"""Share of the best measured throughput that counts as saturated (the bench's steps are 1/4/8/16 clients)."""


@dataclass(frozen=True)
class Target:
    """A target value for one scaling signal, and how it was obtained (logged, so a dry run shows it)."""

    signal: str
    value: float
    reason: str


def from_file(path: str, signal: str, backend: Optional[str] = None, max_wait_s: float = 10.0,
              workers: int = 1) -> Target:
    """Read a hand-written target or a bench result; raise LimitError when it cannot give ``signal``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise LimitError(f"--target-from must be a readable JSON file; {path}: {error}") from error
    if isinstance(data, dict) and "rows" in data:
        return from_bench(data, signal, backend, max_wait_s, workers, source=path)
    if isinstance(data, dict) and {"metric", "target"} <= set(data):
        if data["metric"] != signal:
            raise LimitError(f"--target-from {path} holds a target for {data['metric']!r}, not for --scale-on {signal}")
        value = data["target"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LimitError(f"--target-from {path}: target must be a number greater than 0; got {value!r}")
        return Target(signal, float(value), f"from {path}")
    raise LimitError(f"--target-from {path} is neither {{\"metric\": ..., \"target\": ...}} nor the output of "
                     "`bench/throughput.py run --json FILE`")


def from_bench(bench: dict, signal: str, backend: Optional[str], max_wait_s: float, workers: int,
               source: str = "bench") -> Target:
    if signal == "invocations":
        raise LimitError("a bench result gives targets for --scale-on concurrency or queued-audio, not invocations "
                         "(an invocation's work depends on its audio's length)")
    server = _server_row(bench, backend, source)
    points = _throughput_points(server)
    best_clients, best = max(points, key=lambda point: point[1])
    knee_clients = min(n for n, rtf in points if rtf >= KNEE * best)
    measured = (f"{server['backend']} on {bench.get('device', '?')} in {source}: best {best:.1f} audio s/s at "
                f"{best_clients} clients")
    if signal == "concurrency":
        return Target(signal, float(knee_clients),
                      f"{measured}; {knee_clients} clients already reach {KNEE:.0%} of it")
    if not max_wait_s > 0 or workers < 1:
        raise LimitError(f"--max-wait must be > 0 and --workers-per-instance >= 1; got {max_wait_s}, {workers}")
    value = best * max_wait_s / workers
    return Target(signal, round(value, 1),
                  f"{measured}; x {max_wait_s:g} s of wait / {workers} worker(s) per instance")


def _server_row(bench: dict, backend: Optional[str], source: str) -> dict:
    rows = [row.get("server", {}) for row in bench.get("rows", [])]
    names = [row.get("backend") for row in rows]
    if backend is None and len(rows) == 1:
        return rows[0]
    if backend is None:
        raise LimitError(f"{source} measured {', '.join(map(str, names))}: choose one with --bench-backend")
    for row in rows:
        if row.get("backend") == backend:
            return row
    raise LimitError(f"{source} has no row for backend {backend!r}; it has {', '.join(map(str, names)) or 'none'}")


def _throughput_points(server: dict) -> list[tuple[int, float]]:
    """(concurrent clients, audio seconds per second), one client included."""
    try:
        points = [(1, float(server["seq_rtf"]))]
        # JSON turned the bench's int keys into strings.
        points += [(int(n), float(rtf)) for n, rtf in server.get("concurrent_rtf", {}).items()]
    except (KeyError, TypeError, ValueError) as error:
        raise LimitError(f"bench row for {server.get('backend')!r} lacks seq_rtf / concurrent_rtf: {error}") from error
    if not all(rtf > 0 for _, rtf in points):
        raise LimitError(f"bench row for {server.get('backend')!r} has a throughput of 0: {points}")
    return sorted(points)
