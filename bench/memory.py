"""Peak memory of one long transcription: decoded in windows (WHISPER_WINDOW_SECONDS) vs whole.

Each measurement runs in its own process, so peak RSS is its own.

    .venv/bin/python bench/memory.py [--minutes 20] [--backend ctranslate2] [--window 600]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import speech  # noqa: E402

MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models"


def _run(backend_name: str, path: str, window: float, out: mp.Queue) -> None:
    from serve.backends import load_backend
    from serve.settings import Settings
    from serve.transcribe import transcribe_file

    with tempfile.TemporaryDirectory() as empty:
        settings = Settings.from_env({"WHISPER_MODEL_DIR": empty, "WHISPER_BACKEND": backend_name,
                                      "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_DEVICE": "cpu"})
        backend = load_backend(settings)
        loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        result = transcribe_file(backend, path, window_seconds=window)
        out.put({"window": window, "loaded_mb": loaded, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                 "seconds": time.perf_counter() - t0, "words": len(result.text.split())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.5)
    parser.add_argument("--backend", default="ctranslate2")
    parser.add_argument("--window", type=float, default=600.0)
    args = parser.parse_args()
    clip = speech.long_clip(args.minutes)
    print(f"{speech.duration(clip.path):.0f} s of speech, backend {args.backend}")
    ctx = mp.get_context("spawn")
    rows = []
    for window in (0.0, args.window):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(args.backend, str(clip.path), window, q))
        p.start()
        rows.append(q.get())
        p.join()
        r = rows[-1]
        label = "whole file" if not window else f"{window:.0f} s windows"
        print(f"{label:>14}: peak RSS {r['peak_mb']:.0f} MB (model loaded: {r['loaded_mb']:.0f} MB), "
              f"{r['seconds']:.0f} s, {r['words']} words")
    whole, windowed = rows
    print(f"audio-dependent memory, windowed / whole: "
          f"{(windowed['peak_mb'] - windowed['loaded_mb']) / (whole['peak_mb'] - whole['loaded_mb']):.2f}")


if __name__ == "__main__":
    main()
