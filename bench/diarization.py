"""How right and how costly the embedded diarization is (serve/diarization), on this machine.

    python bench/diarization.py                  # sample.wav, 10 conversations, a 10-minute file's cost
    python bench/diarization.py --hour           # and a 1-hour stream: time and peak memory

- **Real speech**: pyannote.audio's sample.wav (30 s, two speakers, its
  reference RTTM), with the pipeline's own VAD and no speaker count given.
- **Conversations**: 10 espeak-ng conversations of 2, 3 and 4 voices far
  apart in pitch and rate, turns of 1-15 s, 5-10 minutes each
  (tests/conversations.py). DER with pyannote.metrics (collar 0.25 s, overlap
  scored and skipped: these have none) and whether the count of speakers
  found is right.
- **Cost**: diarizing a 10-minute conversation against transcribing it with
  the server's engine (faster-whisper, the embedded tiny.en, int8, its VAD,
  beam 5), both with the same threads (``--threads``), one after the other; the process's
  RSS before and at most while diarizing. With ``--hour``, one hour fed
  in 1 s pieces, as a request's audio streams: time and peak RSS.

Goals (the issue's): DER <= 0.12 on sample.wav with the right count; DER <=
0.10 and the count right in at least 9 of 10 conversations; diarization <=
0.5x the transcription's time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.diarization import Diarizer, embedded  # noqa: E402
from tests import conversations, speech  # noqa: E402

PIECE = 16000
"""Samples fed at a time (1 s), as a request's decoded audio arrives."""


def diarize(audio: np.ndarray, **counts):
    diarizer = Diarizer(embedded(), **counts)
    for i in range(0, len(audio), PIECE):
        diarizer.feed(audio[i:i + PIECE])
    return diarizer.finish()


class PeakRss:
    """The process's resident memory before and at its highest while the block runs (sampled every 0.2 s), MB."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss / 2**20
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss / 2**20)


def row(name: str, recording: conversations.Recording, seconds: float) -> dict:
    audio = speech.load_pcm(recording.path)
    start = time.perf_counter()
    turns = diarize(audio)
    took = time.perf_counter() - start
    s = conversations.score(recording, turns)
    print(f"| {name} | {seconds / 60:.1f} | {s['speakers']} | {s['found']} | {s['der']:.3f} | {s['der_no_overlap']:.3f} "
          f"| {s['missed']:.3f} / {s['false_alarm']:.3f} / {s['confusion']:.3f} | {took:.1f} |", flush=True)
    return s


def accuracy(count: int) -> None:
    print("| audio | minutes | speakers | found | DER | DER, overlap skipped | missed / false alarm / confusion "
          "| diarization s |")
    print("|---|---|---|---|---|---|---|---|")
    sample = conversations.pyannote_sample()
    row("pyannote sample.wav", sample, sample.seconds)
    rng = random.Random(1)
    scores = []
    for i in range(count):
        speakers, seconds = 2 + i % 3, rng.uniform(300, 600)
        recording = conversations.conversation(speakers, round(seconds), seed=100 + i)
        scores.append(row(f"conversation {i + 1}", recording, recording.seconds))
    if not scores:
        return
    right = sum(s["found"] == s["speakers"] for s in scores)
    print(f"\nconversations: mean DER {np.mean([s['der'] for s in scores]):.3f}, "
          f"worst {max(s['der'] for s in scores):.3f}, speaker count right in {right} of {len(scores)}")


def cost(threads: int) -> None:
    from faster_whisper import WhisperModel

    from serve.models.default_model import embedded_ct2_dir

    recording = conversations.conversation(3, 600, seed=200)
    audio = speech.load_pcm(recording.path)
    with PeakRss() as rss:
        start = time.perf_counter()
        diarize(audio)
        diarizing = time.perf_counter() - start
    model = WhisperModel(str(embedded_ct2_dir()), device="cpu", compute_type="int8", cpu_threads=threads)
    start = time.perf_counter()
    segments, _ = model.transcribe(audio, beam_size=5, vad_filter=True)
    list(segments)
    transcribing = time.perf_counter() - start
    print(f"\n10-minute file ({len(audio) / 16000:.0f} s): diarization {diarizing:.1f} s, transcription "
          f"{transcribing:.1f} s: {diarizing / transcribing:.2f}x; RSS {rss.before:.0f} MB before diarizing "
          f"(model loaded, audio in memory), {rss.peak:.0f} MB at most while diarizing")


def hour() -> None:
    recording = conversations.conversation(4, 3600, seed=300)
    with PeakRss() as rss:
        start = time.perf_counter()
        diarizer = Diarizer(embedded())
        with wave.open(str(recording.path)) as w:  # read as it streams: the hour is never in memory at once
            while chunk := w.readframes(PIECE):
                diarizer.feed(np.frombuffer(chunk, np.int16).astype(np.float32) / 32768)
        turns = diarizer.finish()
        took = time.perf_counter() - start
    s = conversations.score(recording, turns)
    print(f"\n1-hour stream: diarization {took:.0f} s ({recording.seconds / took:.0f}x real time), "
          f"DER {s['der']:.3f}, {s['found']} of {s['speakers']} speakers; RSS {rss.before:.0f} MB before, "
          f"{rss.peak:.0f} MB at most while diarizing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--hour", action="store_true", help="also diarize a 1-hour stream")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for both the embedder (torch) and the transcription (default: all, "
                             "as the server; on a shared, loaded machine 1 measures without the threads fighting)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    embedded()  # loaded (and traced) before any clock starts, as a server does at start
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.threads} threads\n")
    accuracy(args.conversations)
    if not args.skip_cost:
        cost(args.threads)
    if args.hour:
        hour()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
