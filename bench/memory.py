"""Peak memory of a worker: one long upload, then a burst of them at once, through the server.

Decoded audio lives on disk (16-bit PCM in the request's scratch folder);
the scheduler reads the 30 s windows it decodes next, so a burst of long
uploads should cost the worker little more than one. Prints the peak
resident memory of the gunicorn worker for 1 and for N concurrent
requests of the same long file, and their ratio.

With ``--diarize``, the file is a conversation of four espeak-ng voices
(tests/conversations.py) sent with ``diarize=true``: the diarizer keeps only
its windows' embeddings, so what diarizing adds to the worker (torch and the
speaker model, loaded with its first diarized request) should not grow with
the audio; compare ``--minutes 10`` with 60. The speakers found are printed too.

    python bench/memory.py [--minutes 20] [--burst 4] [--backend ctranslate2] [--diarize]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import MODEL_CACHE, PeakMemory, post  # noqa: E402


def peak(server, path: Path, concurrent: int, attributes: str = "") -> tuple[float, float, list[dict]]:
    """The worker's peak RSS (MB) and the seconds while ``concurrent`` requests of ``path`` run; their answers."""
    memory = PeakMemory(server.process.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        answers = [a for _, a in pool.map(lambda _: post(server.url, path, attributes=attributes), range(concurrent))]
    return memory.stop(), time.perf_counter() - started, answers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=4)
    parser.add_argument("--backend", default="ctranslate2")
    parser.add_argument("--diarize", action="store_true", help="a four-voice conversation, sent with diarize=true")
    args = parser.parse_args(argv)

    from localmodes.server import ServerProcess
    from tests import conversations, speech

    if args.diarize:
        clip = conversations.conversation(4, round(args.minutes * 60), seed=300)
        attributes = "diarize=true"
    else:
        clip, attributes = speech.long_clip(args.minutes), ""
    seconds = speech.duration(clip.path)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        os.chmod(scratch, 0o711)  # run as root, nginx's workers (www-data) must reach WHISPER_TMP_DIR
        env = {"WHISPER_BACKEND": args.backend, "WHISPER_MODEL_DIR": str(Path(scratch) / "empty"),
               "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_TMP_DIR": str(Path(scratch) / "tmp")}
        server = ServerProcess(env, log_path=Path(scratch) / "server.log").start()
        try:
            server.wait_ready(600)
            idle = PeakMemory(server.process.pid)
            time.sleep(1)
            idle_mb = idle.stop()
            one_mb, one_s, answers = peak(server, clip.path, 1, attributes)
            burst_mb, burst_s, _ = peak(server, clip.path, args.burst, attributes)
        finally:
            server.stop(60)
    if args.diarize:
        found = {s["speaker"] for s in answers[0].get("speakers", [])}
        print(f"diarize=true: {len(found)} speakers found of {clip.speakers}")
    print(f"{args.backend}, a {seconds / 60:.1f} min file ({clip.path.stat().st_size / 1e6:.0f} MB WAV): "
          f"worker peak RSS idle {idle_mb:.0f} MB; 1 request {one_mb:.0f} MB ({one_s:.0f} s); "
          f"{args.burst} at once {burst_mb:.0f} MB ({burst_s:.0f} s); burst / one = x{burst_mb / one_mb:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
