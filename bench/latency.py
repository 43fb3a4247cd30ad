"""Latency to the first and to the last word, whole answer vs streamed answer, through a local server.

For the README's "Choosing an inference mode": the same ``POST /invocations`` that SageMaker's
``InvokeEndpoint`` and ``InvokeEndpointWithResponseStream`` reach, measured from the client here
(SageMaker's own hop is not in it):

- **real-time**: the whole JSON answer; its first word comes with its last;
- **real-time streamed** (``stream=true``): the first segment line (the first word), the
  ``done`` line (the last);

on the short clips of ``bench/throughput.py prepare`` (the two ways alternated clip by clip,
the first two clips sent once before as a warm-up) and on its long file (alternated, ``--long-runs``
each). One request at a time: latency, not throughput (that is ``bench/throughput.py``'s).

    python bench/latency.py [--audio .cache/bench-audio] [--long-runs 2] [--backend ctranslate2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def whole(url: str, path: Path) -> tuple[float, float]:
    """(first word, last word) seconds of a whole answer: both when it arrives."""
    import requests

    started = time.perf_counter()
    with open(path, "rb") as body:
        r = requests.post(url + "/invocations", data=body, headers={"Content-Type": "audio/wav"}, timeout=3600)
    r.raise_for_status()
    seconds = time.perf_counter() - started
    return seconds, seconds


def streamed(url: str, path: Path) -> tuple[float, float]:
    """(first segment, done) seconds of a streamed answer."""
    import requests

    headers = {"Content-Type": "audio/wav", "X-Amzn-SageMaker-Custom-Attributes": "stream=true"}
    started = time.perf_counter()
    first = None
    with open(path, "rb") as body:
        with requests.post(url + "/invocations", data=body, headers=headers, stream=True, timeout=3600) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                event = json.loads(line)
                if event["type"] == "segment" and first is None:
                    first = time.perf_counter() - started
                elif event["type"] == "done":
                    return (first if first is not None else time.perf_counter() - started,
                            time.perf_counter() - started)
                elif event["type"] == "error":
                    raise RuntimeError(f"the stream ended in an error: {event}")
    raise RuntimeError("the stream ended without done")


WAYS = {"real-time": whole, "real-time streamed": streamed}


def measure(url: str, short: list[Path], long: Path, long_runs: int) -> list[dict]:
    for path in short[:2]:
        whole(url, path)  # warm: the first requests pay one-time costs
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for path in short:
        for way, call in WAYS.items():
            times.setdefault((way, "short"), []).append(call(url, path))
    for _ in range(long_runs):
        for way, call in WAYS.items():
            times.setdefault((way, "long"), []).append(call(url, long))
    return [{"mode": way, "audio": kind, "requests": len(runs),
             "first_word_s_median": statistics.median(r[0] for r in runs),
             "last_word_s_median": statistics.median(r[1] for r in runs)}
            for (way, kind), runs in times.items()]


def main(argv=None) -> int:
    from bench.live import start_server
    from bench.throughput import load_manifest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=ROOT / ".cache" / "bench-audio",
                        help="a bench/throughput.py prepare folder")
    parser.add_argument("--long-runs", type=int, default=2)
    parser.add_argument("--backend", default="ctranslate2")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    manifest = load_manifest(args.audio)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        server = start_server(args.backend, args.device, Path(scratch), 1)
        try:
            rows = measure(server.url, [c["path"] for c in manifest["short"]], manifest["long"]["path"],
                           args.long_runs)
        finally:
            server.stop(60)
    seconds = {"short": statistics.median(c["seconds"] for c in manifest["short"]), "long": manifest["long"]["seconds"]}
    result = {"device": args.device, "backend": args.backend, "load_average_before": load,
              "audio_s": seconds, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"{args.backend} on {args.device}, load average before {load:.2f}; short clips (median "
          f"{seconds['short']:.1f} s of audio), a {seconds['long']:.0f} s file\n")
    print("| mode | audio | requests | first word s (median) | last word s (median) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['audio']} | {r['requests']} | {r['first_word_s_median']:.2f} "
              f"| {r['last_word_s_median']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
