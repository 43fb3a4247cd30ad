"""What metrics cost a request: median short-clip latency with WHISPER_METRICS on and off, alternated.

Two servers run side by side (``localmodes.server.ServerProcess``, the
embedded tiny.en on ctranslate2, one worker each), identical but for
WHISPER_METRICS. Each round sends every short clip to both, one after the
other, the side that goes first alternating from clip to clip, so that a
change in the machine's load falls on both sides alike. It prints both
medians, their ratio, each round's medians, and the median and quartiles
of the ratio within each pair (the same clip, one right after the other):
the spread is the noise a difference must exceed to mean anything.

    python bench/throughput.py prepare --out .cache/bench-audio     # the audio, once
    python bench/metrics_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import MODEL_CACHE, load_manifest, post  # noqa: E402


@contextlib.contextmanager
def server(metrics: bool, scratch: Path, device: str):
    from localmodes.server import ServerProcess

    env = {"WHISPER_BACKEND": "ctranslate2", "WHISPER_MODEL_DIR": str(scratch / "empty-model"),
           "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_TMP_DIR": str(scratch / "tmp"), "WHISPER_DEVICE": device,
           "HF_HUB_OFFLINE": "1", "WHISPER_METRICS": "on" if metrics else "off"}
    process = ServerProcess(env, log_path=scratch / "server.log").start()
    try:
        process.wait_ready(900)
        yield process.url
    finally:
        process.stop(60)


def measure(manifest: dict, rounds: int, device: str) -> dict:
    short = manifest["short"]
    latencies: dict[str, list[float]] = {"on": [], "off": []}
    per_round: dict[str, list[float]] = {"on": [], "off": []}
    pairs: list[float] = []
    """on / off for the same clip, sent one right after the other: the load they met is most alike."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for side in ("on", "off"):
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-metrics-{side}-")))
            os.chmod(scratch, 0o711)  # run as root, nginx's workers (www-data) must reach WHISPER_TMP_DIR
            urls[side] = stack.enter_context(server(side == "on", scratch, device))
        for side in urls:
            for c in short[:2]:
                post(urls[side], c["path"])  # warm: first requests pay one-time costs
        for r in range(rounds):
            this_round: dict[str, list[float]] = {"on": [], "off": []}
            for k, c in enumerate(short):
                order = ("on", "off") if (r + k) % 2 == 0 else ("off", "on")
                for side in order:
                    seconds, _ = post(urls[side], c["path"])
                    this_round[side].append(seconds)
                pairs.append(this_round["on"][-1] / this_round["off"][-1])
            for side in this_round:
                latencies[side] += this_round[side]
                per_round[side].append(statistics.median(this_round[side]))
    on, off = statistics.median(latencies["on"]), statistics.median(latencies["off"])
    return {"requests_per_side": len(latencies["on"]), "median_ms_on": round(1000 * on, 1),
            "median_ms_off": round(1000 * off, 1), "ratio_on_off": round(on / off, 3),
            "paired_ratio_median": round(statistics.median(pairs), 3),
            "paired_ratio_quartiles": [round(q, 3) for q in statistics.quantiles(pairs, n=4)],
            "round_medians_ms_on": [round(1000 * x, 1) for x in per_round["on"]],
            "round_medians_ms_off": [round(1000 * x, 1) for x in per_round["off"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, default=ROOT / ".cache" / "bench-audio")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = measure(load_manifest(args.audio), args.rounds, args.device)
    load = os.getloadavg()
    print(f"load average before the last round ended: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"short clips, {result['requests_per_side']} requests a side, alternated:")
    print(f"  metrics on : median {result['median_ms_on']} ms  (rounds: {result['round_medians_ms_on']})")
    print(f"  metrics off: median {result['median_ms_off']} ms  (rounds: {result['round_medians_ms_off']})")
    print(f"  on / off   : {result['ratio_on_off']} of the medians; per clip pair, median "
          f"{result['paired_ratio_median']} (quartiles {result['paired_ratio_quartiles']})")


if __name__ == "__main__":
    main()
