"""What the text-comparing tests' audio scores on several decoding paths: the ground for their bounds.

int8 results differ from one CPU to another (CTranslate2 picks its kernels by
the CPU's instruction set, and uses Intel MKL on Intel, oneDNN elsewhere), and
float32 differs a little between engines. This emulates other machines on this
one: each path is a process with CTranslate2's ISA / GEMM backend forced, a
different compute type or thread count, or another engine; plus a broken model
(the real weights shuffled) to show what the bounds must fail.

For every test audio it reports WER, missing sentences (``missing_sentences``),
dropped runs (``dropped_runs``) and the longest speech no segment covers
(``uncovered_speech``). Raw transcripts are kept under .cache/bounds/, so the
table can be recomputed without decoding again (--table).

    .venv/bin/python bench/bounds.py                      # every path, then the table
    .venv/bin/python bench/bounds.py --paths ct2-int8-avx,openai-f32 --long20
    .venv/bin/python bench/bounds.py --table              # from the kept results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import speech  # noqa: E402

OUT = ROOT / ".cache" / "bounds"
MODEL_CACHE = ROOT / ".cache" / "models"

# name: (backend, environment). The environment is the process's (CT2_*, ATEN_*, MKL_* are read once
# at start-up) and the backend's settings (WHISPER_*).
_SSE = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "WHISPER_CPU_THREADS": "1"}
PATHS: dict[str, tuple[str, dict]] = {
    "ct2-int8": ("ctranslate2", {}),  # this CPU's own choice (AVX2 here), all cores
    "ct2-int8-1t": ("ctranslate2", {"WHISPER_CPU_THREADS": "1"}),
    "ct2-int8-avx": ("ctranslate2", {"CT2_FORCE_CPU_ISA": "AVX"}),
    "ct2-int8-generic": ("ctranslate2", {"CT2_FORCE_CPU_ISA": "GENERIC"}),
    "ct2-int8-mkl": ("ctranslate2", {"CT2_USE_MKL": "1"}),  # what an Intel CPU runs
    "ct2-f32": ("ctranslate2", {"WHISPER_COMPUTE_TYPE": "float32"}),
    "ct2-f32-generic": ("ctranslate2", {"WHISPER_COMPUTE_TYPE": "float32", "CT2_FORCE_CPU_ISA": "GENERIC"}),
    "openai-f32": ("openai", {}),
    "openai-f32-sse": ("openai", _SSE),
    "hf-f32": ("transformers", {}),
    "hf-f32-sse": ("transformers", _SSE),
    # this CPU's int8 on audio with noise at -80 dBFS added: small numeric differences anywhere, two draws
    "ct2-int8-dither1": ("ctranslate2", {"BOUNDS_DITHER": "1"}),
    "ct2-int8-dither2": ("ctranslate2", {"BOUNDS_DITHER": "2"}),
    "broken": ("openai", {"BOUNDS_BROKEN": "shuffle"}),  # every weight tensor's values shuffled
}
DITHER = 1e-4

FORMATS = ("wav", "mp3", "ogg", "flac", "m4a", "webm", "mp4")  # tests/localmodes/test_e2e.py
CONVERT_SENTENCE = "We need to finish the quarterly report before the meeting on Friday."  # tests/models/test_convert.py


def clip_in(fmt: str, index: int) -> speech.Clip:
    return speech.speak(speech.SENTENCES[index], speech.VOICES[index % len(speech.VOICES)], fmt)


def big_wav(first: int = 0, last: int = 1) -> speech.Clip:
    """test_no_413_without_a_cap_even_over_torchserves_6_mb's file: speech padded to 40 s, 48 kHz stereo."""
    clip = speech.speak(" ".join(speech.SENTENCES[first:last]))
    big = OUT / f"big{first}-{last}.wav"
    if not big.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip.path), "-af", "apad", "-t", "40", "-ar",
                        "48000", "-ac", "2", str(big)], check=True)
    return speech.Clip(big, clip.text, clip.voice)


def short_sets() -> dict[str, tuple[list[speech.Clip], dict, bool, str]]:
    """Sets of short clips: (clips, options, sent at once, the tests that score them).

    Clips a test sends one by one are decoded alone; sets sent at once share
    engine calls (packed into one 30 s window on CPU, with each other's text as
    context), which changes words too. Sets of the local modes, whose traffic
    is partly concurrent, are measured both ways.
    """
    corpus = speech.corpus(16)
    inputs = speech.SENTENCES[1]
    lm_batch = [clip_in(FORMATS[i % 7], i) for i in range(11)]
    lm_async = [clip_in(FORMATS[i % 7], i + 4) for i in range(10)]
    lm_restart = [clip_in(FORMATS[i % 7], i) for i in range(10)]
    return {
        "corpus16@once": (corpus, {}, True, "backends/test_engines::test_corpus_word_error_rate (pooled)"),
        "corpus16": (corpus, {}, False, "(each alone: the corpus as single requests)"),
        "corpus4@once": (corpus[:4], {}, True, "test_server_concurrency::test_concurrent_requests"),
        "word_ts": ([corpus[1]], {"word_timestamps": True}, False, "backends/test_engines::test_word_timestamps"),
        "beam": ([corpus[3]], {"beam_size": 3, "temperature": (0.0, 0.4)}, False,
                 "backends/test_engines::test_beam_search_and_temperature_fallback"),
        "contract": ([speech.speak(speech.SENTENCES[2])], {}, False,
                     "test_server_contract::test_invocation_json_default"),
        "inputs": ([speech.speak(inputs, fmt=f) for f in FORMATS]
                   + [speech.speak(inputs, "en-gb", "m4a"), speech.speak(inputs, "en-us+f3", "mp3")], {}, False,
                   "test_server_inputs (each input kind and output format)"),
        "inputs_words": ([speech.speak(inputs, fmt="ogg"), speech.speak(inputs, "en-us+f3", "mp3"),
                          speech.speak(inputs, fmt="mp3")], {"word_timestamps": True}, False,
                         "test_server_inputs (word_timestamps=true requests)"),
        "keyword_weather": ([corpus[2]], {"language": "en"}, False,
                            "backends/test_engines::test_explicit_english_is_fine ('weather')"),
        "keyword_stella": ([corpus[1]], {"initial_prompt": "Stella, Stella."}, False,
                           "backends/test_engines::test_initial_prompt_steers_spelling ('Stella')"),
        "big413": ([big_wav()], {}, False, "test_server_errors::test_no_413_without_a_cap (before: one sentence)"),
        "big413x4": ([big_wav(0, 4)], {}, False, "test_server_errors::test_no_413_without_a_cap (SENTENCES[:4])"),
        "big413x4b": ([big_wav(1, 5)], {}, False, "test_server_errors::test_no_413_without_a_cap (SENTENCES[1:5])"),
        "lm_realtime": ([clip_in("mp3", 1)], {}, False, "localmodes/test_e2e::test_realtime_one_command"),
        "lm_batch": (lm_batch, {}, False, "localmodes/test_e2e::test_batch_transform_s3 (pooled)"),
        "lm_batch@once": (lm_batch, {}, True, "the same, sent at once"),
        "lm_folder": ([clip_in("wav", 2), clip_in("ogg", 3)], {}, False,
                      "localmodes/test_e2e::test_batch_script_over_a_folder"),
        "lm_async10": (lm_async, {}, False, "localmodes/test_e2e::test_async_ten_requests (pooled)"),
        "lm_async10@once": (lm_async, {}, True, "the same, sent at once"),
        "lm_restart": (lm_restart, {}, False, "localmodes/test_e2e::test_async_restart_mid_queue (pooled)"),
    }


def long_sets(backend: str, long20: bool) -> dict[str, tuple[speech.Clip, dict, str]]:
    """Long clips: (clip, options, the tests that check them)."""
    minute, three = speech.long_clip(1.0), speech.long_clip(3.0)
    out = {
        "minute": (minute, {}, "test_server_concurrency::test_sigterm (WER)"),
        "minute_seq": (minute, {"condition_on_previous_text": True},
                       "backends/test_engines::test_sequential_long_form_is_complete"),
        "long3": (three, {}, "backends/test_engines::test_long_file_is_complete; test_server_concurrency::test_ping"),
    }
    if backend == "ctranslate2":
        out["long3_novad"] = (three, {"vad_filter": False}, "backends/test_engines::test_long_file_without_vad_is_complete")
        out["minute_chunk10"] = (minute, {"chunk_length_s": 10}, "backends/test_engines::test_short_chunks_are_complete")
        if long20:
            out["long20"] = (speech.long_clip(20.5), {"condition_on_previous_text": False},
                             "localmodes/test_e2e::test_async_twenty_minute_file_transcribed_completely")
    return out


# ---- one path, in its own process ------------------------------------------------------------

def _shuffle_weights(model) -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.data.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=gen)])


def _dithered(path: Path, seed: int) -> Path:
    """``path`` decoded, with noise at -80 dBFS added, as a float32 WAV (cached)."""
    import hashlib

    import numpy as np

    out = OUT / "dither" / f"{hashlib.sha1(f'{path}|{seed}'.encode()).hexdigest()[:16]}.wav"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        audio = speech.load_pcm(path)
        noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32) * DITHER
        tmp = out.with_suffix(".tmp.wav")
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "-",
                        "-c:a", "pcm_f32le", str(tmp)], input=(audio + noise).tobytes(), check=True)
        tmp.rename(out)
    return out


def _convert_checks(backend, name: str) -> dict:
    """test_convert's own calls on its sentence (float32 engines only)."""
    clip = speech.speak(CONVERT_SENTENCE, "en-us")
    out: dict = {}
    if name == "openai":
        import whisper

        model = backend.model
        r = model.transcribe(str(clip.path), word_timestamps=True, fp16=False, temperature=0.0)
        out["openai_transcribe"] = r["text"]
        out["openai_words"] = sum(len(s["words"]) for s in r["segments"])
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(whisper.load_audio(str(clip.path))))
        d = whisper.decode(model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))
        out["greedy_tokens"], out["greedy_text"] = list(d.tokens), d.text
    elif name == "transformers":
        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=str(MODEL_CACHE / "tiny.en" / "transformers"),
                       device="cpu")
        out["hf_plain"] = asr(str(clip.path))["text"]
        out["hf_timed"] = asr(str(clip.path), return_timestamps=True)["text"]
    elif name == "ctranslate2" and backend.device.compute_type == "float32":
        import ctranslate2
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(whisper.load_audio(str(clip.path))))
        tok = whisper.tokenizer.get_tokenizer(multilingual=False)
        model = backend.model.model  # faster-whisper's ctranslate2.models.Whisper
        r = model.generate(ctranslate2.StorageView.from_array(mel[None].numpy()), [[tok.sot, tok.no_timestamps]],
                           beam_size=1)
        out["greedy_tokens"] = list(r[0].sequences_ids[0])
        out["greedy_text"] = tok.decode(out["greedy_tokens"])
    return out


def run_path(path_name: str, long20: bool, cases: set[str] | None = None) -> dict:
    """Every case on one path, through the serving path the tests use: backend + scheduler."""
    from serve.backends import load_backend
    from serve.core.options import TranscribeOptions, resolve
    from serve.core.runtime import scheduler_config
    from serve.core.scheduler import Scheduler
    from serve.settings import Settings

    name, env = PATHS[path_name]
    settings_env = {k: v for k, v in env.items() if k.startswith("WHISPER_")}

    def settings_with(**extra: str):
        with tempfile.TemporaryDirectory() as empty:
            return Settings.from_env({"WHISPER_MODEL_DIR": empty, "WHISPER_BACKEND": name,
                                      "WHISPER_CACHE_DIR": str(MODEL_CACHE), "WHISPER_DEVICE": "cpu",
                                      **settings_env, **extra})

    settings = settings_with()
    backend = load_backend(settings)
    scheduler = Scheduler(backend, scheduler_config(settings, backend.device.kind))
    broken = os.environ.get("BOUNDS_BROKEN") == "shuffle"
    if broken:
        _shuffle_weights(backend.model)
    seed = os.environ.get("BOUNDS_DITHER")

    def transcribe(clips: list[speech.Clip], options: dict, at_once: bool = False, sched=scheduler) -> list:
        opts = resolve(TranscribeOptions(**options), settings.defaults, backend.capabilities)
        paths = [_dithered(c.path, int(seed)) if seed else c.path for c in clips]
        with tempfile.TemporaryDirectory() as scratch:
            dirs = [Path(scratch) / str(i) for i in range(len(paths))]
            for d in dirs:
                d.mkdir()
            if at_once:
                jobs = [sched.submit(p, d, opts) for p, d in zip(paths, dirs)]
                return [j.wait(3600) for j in jobs]
            return [sched.submit(p, d, opts).wait(3600) for p, d in zip(paths, dirs)]

    result: dict = {"path": path_name, "backend": name, "env": env, "short": {}, "long": {}}
    kept = OUT / f"{path_name}.json"
    if cases is not None and kept.exists():  # only these cases again, the others as kept
        result = json.loads(kept.read_text())
    for case, (clips, options, at_once, _) in short_sets().items():
        if cases is not None and case not in cases:
            continue
        try:
            out = transcribe(clips, options, at_once)
        except Exception as exc:  # noqa: BLE001 - an option this backend refuses: no row
            print(f"{path_name} {case}: {type(exc).__name__}: {exc}", flush=True)
            continue
        rows = [{"ref": c.text, "hyp": t.text, "words": None if t.words is None else len(t.words)}
                for c, t in zip(clips, out)]
        result["short"][case] = rows
        print(f"{path_name} {case}: WER {speech.wer([r['ref'] for r in rows], [r['hyp'] for r in rows]):.3f}",
              flush=True)
    for case, (clip, options, _) in long_sets(name, long20 and not broken).items():
        if cases is not None and case not in cases:
            continue
        [t] = transcribe([clip], options)
        result["long"][case] = {"clip": str(clip.path), "ref": clip.text, "hyp": t.text,
                                "segments": [[s.start, s.end] for s in t.segments]}
        print(f"{path_name} {case}: done", flush=True)
    if name in ("openai", "ctranslate2") and backend.device.compute_type == "float32" and not (broken or seed) \
            and (cases is None or "corpus16_nopack" in cases):
        # test_openai_and_ctranslate2_float32_greedy_agree: WHISPER_PACKING=off, each clip alone
        nopack = Scheduler(backend, scheduler_config(settings_with(WHISPER_PACKING="off"), "cpu"))
        corpus = speech.corpus(16)
        result["short"]["corpus16_nopack"] = [{"ref": c.text, "hyp": t.text, "words": None}
                                              for c, t in zip(corpus, transcribe(corpus, {}, sched=nopack))]
    if cases is None or "convert" in cases:
        result["convert"] = {} if broken or seed else _convert_checks(backend, name)
    return result


# ---- the table -------------------------------------------------------------------------------

def _long_metrics(row: dict) -> dict:
    sentences = speech.split_sentences(row["ref"])
    missing = speech.missing_sentences(sentences, row["hyp"])
    runs = speech.dropped_runs(sentences, row["hyp"])
    segments = [{"start": a, "end": b} for a, b in row["segments"]]
    gaps = speech.uncovered_speech(Path(row["clip"]), segments, longest=0.0)
    return {"wer": speech.wer([row["ref"]], [row["hyp"]]), "sentences": len(sentences), "missing": len(missing),
            "runs": max((len(r) for r in runs), default=0),
            "uncovered": max((b - a for a, b in gaps), default=0.0), "missing_text": missing}


def table(results: dict[str, dict]) -> str:
    paths = [p for p in PATHS if p in results]
    lines = ["| audio (tests) | " + " | ".join(paths) + " |", "|---" * (len(paths) + 1) + "|"]
    sets = short_sets()
    for case, (_, _, _, tests) in sets.items():
        cells = []
        for p in paths:
            rows = results[p]["short"].get(case)
            if not rows:
                cells.append("-")
                continue
            if case.startswith("keyword_"):
                word = case.split("_", 1)[1]
                cells.append("found" if word in rows[0]["hyp"].lower() else f"NOT in {rows[0]['hyp']!r}")
                continue
            pooled = speech.wer([r["ref"] for r in rows], [r["hyp"] for r in rows])
            worst = max(speech.wer([r["ref"]], [r["hyp"]]) for r in rows)
            cells.append(f"{pooled:.2f}" if len(rows) == 1 else f"{pooled:.2f} (max {worst:.2f})")
        lines.append(f"| {case}: WER ({tests}) | " + " | ".join(cells) + " |")
    counts = []
    for p in paths:
        rows = [r for c in ("word_ts", "inputs_words") for r in results[p]["short"].get(c, [])]
        diffs = [r["words"] - len(r["ref"].split()) for r in rows]
        c = results[p].get("convert") or {}
        extra = f"; convert {c['openai_words'] - len(CONVERT_SENTENCE.split()):+d}" if "openai_words" in c else ""
        counts.append((f"{min(diffs):+d} to {max(diffs):+d}" if diffs else "-") + extra)
    lines.append("| words returned minus words said (test_json_base64, test_openai_transcribes_with_word_timestamps) | "
                 + " | ".join(counts) + " |")
    cases = sorted({c for p in paths for c in results[p]["long"]}, key=lambda c: ("long20" in c, c))
    for case in cases:
        cells = []
        for p in paths:
            row = results[p]["long"].get(case)
            if row is None:
                cells.append("-")
                continue
            m = _long_metrics(row)
            cells.append(f"{m['wer']:.2f} / {m['missing']} of {m['sentences']} / run {m['runs']} / "
                         f"{m['uncovered']:.1f} s")
        lines.append(f"| {case}: WER / missing / longest dropped run / longest uncovered speech | "
                     + " | ".join(cells) + " |")
    conv = []
    for p in paths:
        c = results[p].get("convert") or {}
        texts = [c[k] for k in ("openai_transcribe", "greedy_text", "hf_plain", "hf_timed") if k in c]
        conv.append(" ".join(f"{speech.wer([CONVERT_SENTENCE], [t]):.2f}" for t in texts) or "-")
    lines.append("| convert sentence: WER (test_convert, float32 only) | " + " | ".join(conv) + " |")
    return "\n".join(lines)


def agreement(results: dict[str, dict]) -> list[str]:
    """Exact-text tests across engines: openai vs ctranslate2 float32 (corpus, and test_convert's tokens)."""
    out = []
    openai = [p for p in results if p.startswith("openai")]
    ct2 = [p for p in results if p.startswith("ct2-f32")]
    for a in openai:
        for b in ct2:
            ha = [r["hyp"] for r in results[a]["short"].get("corpus16_nopack", [])]
            hb = [r["hyp"] for r in results[b]["short"].get("corpus16_nopack", [])]
            diff = [(x, y) for x, y in zip(ha, hb) if x != y]
            ta = results[a].get("convert", {}).get("greedy_tokens")
            tb = results[b].get("convert", {}).get("greedy_tokens")
            out.append(f"{a} vs {b}: corpus texts differ on {len(diff)} of 16 {diff}; "
                       f"convert greedy tokens {'equal' if ta == tb else 'DIFFER'}")
    return out


def identity(results: dict[str, dict]) -> list[str]:
    """test_concurrent_requests: each answer's WER against its own clip and against the nearest other clip."""
    out = []
    refs = [c.text for c in speech.corpus(4)]
    for p, r in results.items():
        rows = r["short"].get("corpus4@once", [])
        if rows:
            own = [speech.wer([refs[i]], [row["hyp"]]) for i, row in enumerate(rows)]
            other = [min(speech.wer([ref], [row["hyp"]]) for j, ref in enumerate(refs) if j != i)
                     for i, row in enumerate(rows)]
            out.append(f"{p}: own clip {max(own):.2f} at most, nearest other clip {min(other):.2f} at least")
    sentences = list(speech.SENTENCES)
    cross = min(speech.wer([a], [b]) for a in sentences for b in sentences if a != b)
    out.append(f"one test sentence scored against another (a mixed-up answer): WER {cross:.2f} at least")
    return out


def misses(results: dict[str, dict]) -> list[str]:
    out = []
    for p, r in results.items():
        for case, row in r["long"].items():
            m = _long_metrics(row)
            if m["missing_text"]:
                out.append(f"{p} {case}: {m['missing_text']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--long20", action="store_true", help="also the 20-minute file (ctranslate2 paths)")
    parser.add_argument("--cases", help="only these cases (comma-separated; 'convert' for test_convert's), "
                        "merged into the kept results")
    parser.add_argument("--table", action="store_true", help="only print the table of kept results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one path in this process
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.one:
        cases = set(args.cases.split(",")) if args.cases else None
        (OUT / f"{args.one}.json").write_text(json.dumps(run_path(args.one, args.long20, cases)))
        sys.stdout.flush()
        os._exit(0)  # the scheduler's inference thread is a daemon: no engine call at interpreter exit
    if not args.table:
        for p in args.paths.split(","):
            env = {**os.environ, **{k: v for k, v in PATHS[p][1].items() if not k.startswith("WHISPER_")},
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            cmd = [sys.executable, __file__, "--one", p] + (["--long20"] if args.long20 else []) \
                + (["--cases", args.cases] if args.cases else [])
            subprocess.run(cmd, env=env, check=True)
    results = {p: json.loads((OUT / f"{p}.json").read_text()) for p in PATHS if (OUT / f"{p}.json").exists()}
    print(table(results))
    print("\n".join(agreement(results)))
    print("\n".join(identity(results)))
    print("\n".join(misses(results)))


if __name__ == "__main__":
    main()
