"""What the HTTP server adds to a transcription: a 5 s clip through the server vs the backend called directly.

Both measured in one run, on the same machine, the same model and the same
clip. The calls alternate (direct, server, direct, server...) so that any
other load on the machine weighs on both alike; they never overlap.

  direct   transcribe_file(backend, path)          (ffmpeg decode + inference)
  server   POST /invocations to container/serve   (upload, temp file, queue, the same call, JSON)

Usage: python bench/server_latency.py [--backend ctranslate2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests import speech  # noqa: E402
from tests.server_harness import MODEL_CACHE, running_server  # noqa: E402

CLIP_SECONDS = 5.0


def five_second_clip(out_dir: Path) -> Path:
    """Speech padded or cut to exactly 5 s, 16 kHz mono WAV."""
    source = speech.speak(speech.SENTENCES[3]).path
    out = out_dir / "clip5s.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-af", "apad",
                    "-t", str(CLIP_SECONDS), "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


def direct_call(backend_name: str, clip: Path, model_dir: Path):
    from serve.backends import load_backend
    from serve.settings import Settings
    from serve.transcribe import transcribe_file

    settings = Settings.from_env({"WHISPER_BACKEND": backend_name, "WHISPER_MODEL_DIR": str(model_dir),
                                  "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_DEVICE": "cpu"})
    backend = load_backend(settings)
    return lambda: transcribe_file(backend, clip)


def server_call(url: str, clip: Path):
    data = clip.read_bytes()
    session = requests.Session()  # keep-alive, as SageMaker's front end does

    def call():
        r = session.post(url + "/invocations", data=data, headers={"Content-Type": "audio/wav"}, timeout=300)
        r.raise_for_status()

    return call


def alternate(calls: dict, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm: first-call allocations, caches
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1000:7.1f} ms   min {min(times) * 1000:7.1f} ms   "
            f"max {max(times) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="ctranslate2", choices=("openai", "transformers", "ctranslate2"))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        clip = five_second_clip(scratch_path)
        empty_model_dir = scratch_path / "model"
        empty_model_dir.mkdir()
        with running_server(args.backend) as server:
            times = alternate({"direct": direct_call(args.backend, clip, empty_model_dir),
                               "server": server_call(server.url, clip)}, args.repeats)
        direct, server = times["direct"], times["server"]

    d, s = statistics.median(direct), statistics.median(server)
    print(f"clip: {CLIP_SECONDS:.0f} s WAV, backend {args.backend}, embedded tiny.en, CPU, {args.repeats} runs each")
    print(f"backend direct : {summary(direct)}")
    print(f"through server : {summary(server)}")
    print(f"server / direct: {s / d:.3f}x  (server overhead {1000 * (s - d):+.1f} ms per request, median)")


if __name__ == "__main__":
    main()
