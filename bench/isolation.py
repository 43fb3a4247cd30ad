"""What answers under load cost: latency, throughput and same-answer counts, packing off and on, two revisions.

For each configuration (a checkout of the server, WHISPER_PACKING on or off), in one run:

- **alone**: the short clips one by one (after two warm-up requests): median latency and the total;
- **8 clients**: every short clip twice, from 8 clients at once: throughput over one by one, and how
  many answers differ from the same file's answer alone (packing makes them depend on the traffic);
- **a clip during a sequential request**: a short clip sent 8 s into a ``condition_on_previous_text``
  request on the long file: its latency, against its latency alone.

Configurations run alternately (A, B, A, B...) so that a change in the machine's load hits both sides;
repeat with ``--rounds``. Benchmark only on a quiet machine (load average below 0.5 before the run).

    python bench/throughput.py prepare --out .cache/bench-audio          # the audio, once
    python bench/isolation.py --audio .cache/bench-audio --roots /path/to/old-checkout,. --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import load_manifest, post  # noqa: E402

CLIENTS = 8
SEQUENTIAL_DELAY_S = 8.0


class Server:
    """``container/serve`` of another checkout (its own code: container/serve puts its root on PYTHONPATH)."""

    def __init__(self, root: Path, packing: bool, scratch: Path):
        from localmodes.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, WHISPER_BACKEND="ctranslate2", WHISPER_MODEL_DIR=str(scratch / "empty-model"),
                   WHISPER_CACHE_DIR=str(ROOT / ".cache" / "models"), WHISPER_TMP_DIR=str(scratch / "tmp"),
                   WHISPER_DEVICE="cpu", WHISPER_PACKING="on" if packing else "off", WHISPER_BIND_HOST="127.0.0.1",
                   SAGEMAKER_BIND_TO_PORT=str(self.port), HF_HUB_OFFLINE="1",
                   PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
        self.log = open(scratch / "server.log", "wb")
        self.process = subprocess.Popen([sys.executable, str(root / "container" / "serve")], cwd=root, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 600) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def measure(root: Path, packing: bool, manifest: dict) -> dict:
    short = manifest["short"]
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as scratch:
        os.chmod(scratch, 0o711)  # run as root, nginx's workers (www-data) must reach WHISPER_TMP_DIR
        server = Server(root, packing, Path(scratch))
        try:
            server.wait_ready()
            for c in short[:2]:
                post(server.url, c["path"])
            alone, latencies = {}, []
            t0 = time.perf_counter()
            for c in short:
                seconds, body = post(server.url, c["path"])
                latencies.append(seconds)
                alone[c["file"]] = body["text"]
            one_by_one = time.perf_counter() - t0
            jobs = short + short
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                answers = list(pool.map(lambda c: (c["file"], post(server.url, c["path"])[1]["text"]), jobs))
            concurrent = time.perf_counter() - t0
            differ = sum(alone[f] != text for f, text in answers)
            clip = short[0]
            idle = statistics.median(post(server.url, clip["path"])[0] for _ in range(3))
            during = clip_during_sequential(server.url, manifest["long"]["path"], clip["path"])
        finally:
            server.stop()
    return {"latency_ms_median": round(1000 * statistics.median(latencies)), "one_by_one_s": round(one_by_one, 1),
            "clients_x": round(2 * one_by_one / concurrent, 2), "differ": f"{differ}/{len(answers)}",
            "clip_idle_s": round(idle, 2), "clip_during_sequential_s": round(during, 2)}


def clip_during_sequential(url: str, long_path: Path, clip_path: Path) -> float:
    """A short clip's latency, sent SEQUENTIAL_DELAY_S into a condition_on_previous_text request."""
    import requests

    def sequential():
        with open(long_path, "rb") as body:
            requests.post(url + "/invocations", data=body, timeout=3600,
                          headers={"Content-Type": "audio/wav",
                                   "X-Amzn-SageMaker-Custom-Attributes": "condition_on_previous_text=true"})

    runner = threading.Thread(target=sequential, daemon=True)
    runner.start()
    time.sleep(SEQUENTIAL_DELAY_S)
    seconds, _ = post(url, clip_path)
    runner.join()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, default=ROOT / ".cache" / "bench-audio")
    parser.add_argument("--roots", default=str(ROOT), help="checkouts to compare, comma-separated")
    parser.add_argument("--packing", default="off,on")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    manifest = load_manifest(args.audio)
    configs = [(Path(r).resolve(), p == "on") for p in args.packing.split(",") for r in args.roots.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for round_ in range(args.rounds):
        for root, packing in configs:
            row = {"round": round_ + 1, "root": str(root), "packing": "on" if packing else "off",
                   **measure(root, packing, manifest)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| checkout | packing | latency median ms | 25 one by one s | 8 clients x | differ from alone "
          "| clip idle s | clip during a sequential request s |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['root']).name} | {r['packing']} | {r['latency_ms_median']} | {r['one_by_one_s']} | "
              f"x{r['clients_x']} | {r['differ']} | {r['clip_idle_s']} | {r['clip_during_sequential_s']} |")


if __name__ == "__main__":
    main()
