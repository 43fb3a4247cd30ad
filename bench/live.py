"""Live transcription under load: how soon words come, how soon turns end, and whether sessions keep up.

For each number of concurrent sessions (``--sessions 1,4,8,16``), in one run:

- **the audio**: the benchmark's short clips (the sentences and voices of ``bench/throughput.py prepare``,
  spoken here by espeak-ng, or read from a prepared ``--audio`` folder on a machine without it) joined
  with 1.5 s pauses, 1 s of silence first;
- **its reference**: the same audio as a file through ``POST /invocations`` with ``word_timestamps=true``,
  once, before the live runs: each word's end time in the audio, and the transcript;
- **N sessions** stream it at real-time pace in 20 ms frames (``serve/live/client.py``), their starts
  spread over the first second; each ends as the contract says (commit, every turn's completed).

Reported per session count (all sessions' words and turns pooled):

- **first delta**: from the start of the first spoken word to the arrival of the first delta (median);
- **word latency** p50 / p95: from a word's end in the audio to the arrival of the delta that carries it
  (a turn's words that no delta carried come with its completed). Live words are aligned in order with
  the reference's, case and punctuation aside; ``aligned`` is the share of reference words found. Frame
  k leaves at k x 20 ms, at the time its first sample is in the audio (a microphone would give it 20 ms
  later): a word is at most one frame early on the server;
- **stopped -> completed** p50 / p95: from a turn's ``speech_stopped`` to its ``completed``;
- **lag**: how long after the end of its audio a session's last ``completed`` came (the worst session);
  with ``--long-minutes M``, an M-minute stream at ``--long-sessions`` counts also reports how the lag
  grew over it (seconds per minute of audio, least squares over every turn; the worst session);
- **accept**: from opening the connection to the WebSocket's accept (the most of any session; SageMaker
  wants 250 ms);
- **held**: sessions that kept up: not closed by the server (1013 busy or lagging, 1008), every turn
  completed, their last completed within ``--max-lag`` s of its audio; ``client late`` is the most any
  frame left after its time (a busy client machine, not the server, if it is large);
- **WER** of each session's joined completed text against the file transcript (mean), and of both
  against the text spoken;
- ratios against 1 session in the same round.

With no ``--url``, the server is started here (``container/serve`` on the embedded tiny.en, like the
other benches; ``WHISPER_MAX_LIVE_SESSIONS`` set to the largest session count unless already set).
Benchmark only on a quiet machine.

    python bench/live.py [--url http://127.0.0.1:8080] [--sessions 1,4,8,16] [--rounds 2] [--door openai]
        [--long-minutes 10 --long-sessions 1,16] [--audio .cache/bench-audio] [--json results.json]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.live.client import (COMMITTED, COMPLETED, DELTA, SAMPLE_RATE, SPEECH_STOPPED,  # noqa: E402
                               LiveClosedError, LiveError, LiveResult, stream)

PAUSE_S = 1.5
LEAD_S = 1.0
CLIPS = 25
"""As many as ``bench/throughput.py prepare`` makes: about 2 minutes with the pauses."""
MAX_LAG_S = 5.0


# ---- audio and reference ------------------------------------------------------------------------


def read_pcm(path: Path) -> np.ndarray:
    """A file as 16 kHz mono int16 (ffmpeg, as the server reads it)."""
    from tests import speech

    return np.clip(np.round(speech.load_pcm(path) * 32768), -32768, 32767).astype(np.int16)


def clips(audio_dir: Optional[Path], count: int) -> list[tuple[np.ndarray, str]]:
    """(samples, text) of the short clips: from a prepared folder, else spoken here as ``prepare`` does."""
    if audio_dir is not None:
        from bench.throughput import load_manifest

        return [(read_pcm(c["path"]), c["text"]) for c in load_manifest(audio_dir)["short"][:count]]
    from tests import speech

    sentences = list(speech.SENTENCES) + speech.story_sentences(max(0, count - len(speech.SENTENCES)), seed=11)
    return [(read_pcm(speech.speak(s, speech.VOICES[i % len(speech.VOICES)]).path), s)
            for i, s in enumerate(sentences[:count])]


def join(parts: list[tuple[np.ndarray, str]], min_seconds: float = 0.0) -> tuple[np.ndarray, str]:
    """The clips one after the other (again from the first until ``min_seconds``), PAUSE_S apart."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.int16)
    audio, texts, seconds, i = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.int16)], [], LEAD_S, 0
    while i < len(parts) or seconds < min_seconds:
        samples, text = parts[i % len(parts)]
        audio += [samples, pause]
        texts.append(text)
        seconds += (len(samples) + len(pause)) / SAMPLE_RATE
        i += 1
    return np.concatenate(audio), " ".join(texts)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


@dataclass(frozen=True)
class Reference:
    text: str
    words: list[tuple[str, float, float]]
    """(normalised word, start, end) in seconds of the audio."""


def reference(http_url: str, wav: Path, api_key: Optional[str]) -> Reference:
    """The file transcription of the same audio, with each word's time."""
    import requests

    headers = {"Content-Type": "audio/wav", "Accept": "application/json",
               "X-Amzn-SageMaker-Custom-Attributes": "word_timestamps=true"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    with open(wav, "rb") as body:
        r = requests.post(http_url + "/invocations", data=body, headers=headers, timeout=3600)
    r.raise_for_status()
    return reference_from(r.json())


def reference_from(body: dict) -> Reference:
    if body.get("words") is None:
        raise RuntimeError("the file transcription has no words: word_timestamps=true was not honoured")
    words = [(w, float(x["start"]), float(x["end"])) for x in body["words"] for w in words_of(x["word"])]
    return Reference(body["text"], words)


# ---- metrics (pure: tests/live/test_bench_metrics.py) -------------------------------------------

_NOT_WORD = re.compile(r"[^\w']+")


def words_of(text: str) -> list[str]:
    """Words without case or punctuation (one per whitespace token, so that times stay with their words)."""
    return [w for w in (_NOT_WORD.sub("", t.lower()).strip("'") for t in text.split()) if w]


def live_words(result: LiveResult) -> list[tuple[float, str]]:
    """(arrival, word) of each word the session committed, turn by turn in the order the turns began.

    A turn's words come with its deltas; those of its transcript that no delta carried, with its completed.
    """
    order: dict[str, None] = {}
    deltas: dict[str, list[tuple[float, str]]] = {}
    completed: dict[str, tuple[float, str]] = {}
    for r in result.events:
        item = r.event.get("item_id")
        if item is None:
            continue
        order.setdefault(item)
        if r.type == DELTA:
            deltas.setdefault(item, []).extend((r.at, w) for w in words_of(r.event.get("delta", "")))
        elif r.type == COMPLETED:
            completed[item] = (r.at, r.event.get("transcript", ""))
    out: list[tuple[float, str]] = []
    for item in order:
        carried = deltas.get(item, [])
        out += carried
        if item in completed:
            at, transcript = completed[item]
            out += [(at, w) for w in words_of(transcript)[len(carried):]]
    return out


def word_latencies(live: list[tuple[float, str]], ref: list[tuple[str, float, float]]) -> list[float]:
    """Each aligned word's arrival minus its end in the audio (the live and reference words matched in order)."""
    matcher = difflib.SequenceMatcher(a=[w for w, _, _ in ref], b=[w for _, w in live], autojunk=False)
    return [live[b.b + k][0] - ref[b.a + k][2] for b in matcher.get_matching_blocks() for k in range(b.size)]


def first_delta(result: LiveResult, ref: list[tuple[str, float, float]]) -> Optional[float]:
    """From the start of the first spoken word to the first delta's arrival."""
    deltas = result.of(DELTA)
    if not deltas or not ref:
        return None
    return deltas[0].at - ref[0][1]


def stopped_to_completed(result: LiveResult) -> list[float]:
    stopped = {r.event.get("item_id"): r.at for r in result.of(SPEECH_STOPPED)}
    return [r.at - stopped[r.event.get("item_id")] for r in result.of(COMPLETED) if r.event.get("item_id") in stopped]


def lags(result: LiveResult, audio_seconds: float) -> list[tuple[float, float]]:
    """(end of its audio, how long after it the completed came) per turn.

    A turn's audio ends at its speech_stopped's ``audio_end_ms``; the turn our commit ended, at the end of
    the audio. A turn committed otherwise (no speech_stopped, before the commit) has no known end: left out.
    """
    ends = {r.event.get("item_id"): r.event.get("audio_end_ms", 0) / 1000 for r in result.of(SPEECH_STOPPED)}
    committed = {r.event.get("item_id"): r.at for r in result.of(COMMITTED)}
    commit_at = result.commit_at if result.commit_at is not None else float("inf")
    out = []
    for r in result.of(COMPLETED):
        item = r.event.get("item_id")
        if item in ends:
            end = ends[item]
        elif committed.get(item, -1.0) >= commit_at:
            end = audio_seconds
        else:
            continue
        out.append((end, r.at - end))
    return out


def growth_per_minute(points: list[tuple[float, float]]) -> Optional[float]:
    """The least-squares slope of lag over audio time, in seconds of lag per minute of audio."""
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points, dtype=float).T
    return float(np.polyfit(x, y, 1)[0] * 60)


def percentile(values: list[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True)
class Outcome:
    """One session: what it received (also when it was cut short), and why it ended early, if it did."""

    result: Optional[LiveResult]
    error: Optional[str] = None
    closed_code: Optional[int] = None
    """The server's close code when it closed the session before its end (1013, 1008...)."""


def held(outcome: Outcome, audio_seconds: float, max_lag: float) -> bool:
    result = outcome.result
    if outcome.error is not None or result is None or not result.complete:
        return False
    turn_lags = lags(result, audio_seconds)
    return bool(turn_lags) and turn_lags[-1][1] <= max_lag


def summarise(outcomes: list[Outcome], ref: Reference, audio_seconds: float, spoken: str,
              max_lag: float = MAX_LAG_S) -> dict:
    """One row of the table: a session count's sessions, pooled."""
    from tests import speech

    results = [o.result for o in outcomes if o.result is not None]
    per_session = [word_latencies(live_words(r), ref.words) for r in results]
    latencies = [x for session in per_session for x in session]
    firsts = [f for f in (first_delta(r, ref.words) for r in results) if f is not None]
    turns = [x for r in results for x in stopped_to_completed(r)]
    session_lags = [lags(r, audio_seconds) for r in results]
    texts = [r.text() for r in results if r.complete]
    closed: dict[str, int] = {}
    for o in outcomes:
        if o.closed_code is not None:
            closed[str(o.closed_code)] = closed.get(str(o.closed_code), 0) + 1
    return {
        "sessions": len(outcomes),
        "audio_s": round(audio_seconds, 1),
        "held": sum(held(o, audio_seconds, max_lag) for o in outcomes),
        "closed": closed,
        "errors": sorted({o.error for o in outcomes if o.error})[:3],
        "first_delta_s": statistics.median(firsts) if firsts else None,
        "word_p50_s": percentile(latencies, 50), "word_p95_s": percentile(latencies, 95),
        "aligned": statistics.mean(len(s) / max(1, len(ref.words)) for s in per_session) if per_session else None,
        "completed_p50_s": percentile(turns, 50), "completed_p95_s": percentile(turns, 95),
        "lag_last_s": max((points[-1][1] for points in session_lags if points), default=None),
        "lag_growth_s_per_min": max((g for g in map(growth_per_minute, session_lags) if g is not None),
                                    default=None),
        "client_late_ms": 1000 * max((r.max_late_s for r in results), default=0.0),
        "accept_ms_max": max((1000 * r.accept_s for r in results if r.accept_s is not None), default=None),
        "wer_vs_file": statistics.mean(speech.wer([ref.text], [t]) for t in texts) if texts else None,
        "wer_vs_text": statistics.mean(speech.wer([spoken], [t]) for t in texts) if texts else None,
        "file_wer_vs_text": speech.wer([spoken], [ref.text]),
    }


def ratios(rows: list[dict]) -> None:
    """Each row's latencies over the same round's 1-session row (``x_*``), where there is one."""
    for row in rows:
        base = next((r for r in rows if r["round"] == row["round"] and r["kind"] == row["kind"]
                     and r["sessions"] == 1), None)
        for key in ("word_p50_s", "word_p95_s", "completed_p95_s"):
            ok = base is not None and row[key] is not None and base[key]
            row[f"x_{key}"] = row[key] / base[key] if ok else None


# ---- the run ------------------------------------------------------------------------------------


def run_sessions(ws_url: str, samples: np.ndarray, count: int, door: str, api_key: Optional[str],
                 finish_timeout: float) -> list[Outcome]:
    """``count`` sessions at once, each streaming ``samples`` in real time, their starts spread over 1 s."""

    def one(i: int) -> Outcome:
        time.sleep(i / count)
        try:
            return Outcome(stream(ws_url, samples, door=door, api_key=api_key, finish_timeout=finish_timeout))
        except LiveClosedError as e:
            return Outcome(e.result, str(e), e.code)
        except LiveError as e:
            return Outcome(e.result, str(e))
        except Exception as e:  # noqa: BLE001 - a session that could not run is reported, the others go on
            return Outcome(None, f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def urls(url: str) -> tuple[str, str]:
    """(http, ws) URLs of one server, from either."""
    url = url.rstrip("/")
    scheme, rest = url.split("://", 1)
    secure = scheme in ("https", "wss")
    return f"{'https' if secure else 'http'}://{rest}", f"{'wss' if secure else 'ws'}://{rest}"


def start_server(backend: str, device: str, scratch: Path, max_sessions: int):
    from localmodes.server import ServerProcess

    os.chmod(scratch, 0o711)  # run as root, nginx's workers (www-data) must reach WHISPER_TMP_DIR
    env = {"WHISPER_BACKEND": backend, "WHISPER_MODEL_DIR": str(scratch / "empty-model"),
           "WHISPER_CACHE_DIR": str(ROOT / ".cache" / "models"), "WHISPER_TMP_DIR": str(scratch / "tmp"),
           "WHISPER_DEVICE": device, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WHISPER_MAX_LIVE_SESSIONS": os.environ.get("WHISPER_MAX_LIVE_SESSIONS", str(max_sessions))}
    server = ServerProcess(env, log_path=scratch / "server.log")
    server.start()
    server.wait_ready(900)
    return server


def pass_batching(log_lines: list[str]) -> Optional[float]:
    """Live passes per engine call, from the server's log lines of a run: how many sessions' passes shared a
    call (N sessions on one worker instead of N servers). None without the server's log (``--url``)."""
    calls = [json.loads(line[line.index("{"):]).get("engine_call") for line in log_lines if '"live_pass"' in line]
    calls = [c for c in calls if c is not None]
    return len(calls) / len(set(calls)) if calls else None


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = ["| round | audio | sessions | held | first delta s | word p50 / p95 s (x 1 session) | aligned "
             "| stopped -> completed p50 / p95 s | lag s | lag growth s/min | client late ms | accept ms (most) "
             "| WER vs file | WER vs text (file's) | passes per engine call |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['kind']} {r['audio_s']:.0f} s | {r['sessions']} | {r['held']}/{r['sessions']}"
            f"{''.join(f' ({n} closed {code})' for code, n in r['closed'].items())} "
            f"| {fmt(r['first_delta_s'])} | {fmt(r['word_p50_s'])} / {fmt(r['word_p95_s'])} "
            f"(x{fmt(r['x_word_p50_s'])} / x{fmt(r['x_word_p95_s'])}) | {fmt(r['aligned'], '.0%')} "
            f"| {fmt(r['completed_p50_s'])} / {fmt(r['completed_p95_s'])} | {fmt(r['lag_last_s'])} "
            f"| {fmt(r['lag_growth_s_per_min'], '+.3f')} | {fmt(r['client_late_ms'], '.0f')} "
            f"| {fmt(r.get('accept_ms_max'), '.0f')} "
            f"| {fmt(r['wer_vs_file'], '.3f')} | {fmt(r['wer_vs_text'], '.3f')} "
            f"({fmt(r['file_wer_vs_text'], '.3f')}) | {fmt(r.get('passes_per_call'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (http:// or ws://); default: start one here")
    parser.add_argument("--sessions", default="1,4,8,16", help="concurrent session counts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--door", choices=("sagemaker", "openai"), default="sagemaker")
    parser.add_argument("--clips", type=int, default=CLIPS)
    parser.add_argument("--audio", type=Path, help="a bench/throughput.py prepare folder (no espeak-ng needed)")
    parser.add_argument("--long-minutes", type=float, help="also stream this many minutes, for the lag's growth")
    parser.add_argument("--long-sessions", help="session counts for the long stream (default: the largest)")
    parser.add_argument("--max-lag", type=float, default=MAX_LAG_S,
                        help="a session held real time if its last completed came within this (s)")
    parser.add_argument("--finish-timeout", type=float, default=120.0)
    parser.add_argument("--backend", default="ctranslate2", help="for the server started here")
    parser.add_argument("--device", default="auto", help="for the server started here: auto, cpu or cuda")
    parser.add_argument("--api-key", default=os.environ.get("WHISPER_API_KEY"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.sessions.split(",")]
    long_counts = [int(c) for c in args.long_sessions.split(",")] if args.long_sessions else [max(counts)]

    parts = clips(args.audio, args.clips)
    streams = {"short": join(parts)}
    if args.long_minutes:
        streams["long"] = join(parts, 60 * args.long_minutes)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as scratch:
        scratch = Path(scratch)
        server = None
        if args.url is None:
            device = args.device
            if device == "auto":
                from serve.backends import cuda_device_count

                device = "cuda" if cuda_device_count() else "cpu"
            server = start_server(args.backend, device, scratch, max(counts + long_counts))
        http_url, ws_url = urls(args.url or server.url)
        try:
            refs = {kind: reference(http_url, write_wav(scratch / f"{kind}.wav", samples), args.api_key)
                    for kind, (samples, _) in streams.items()}
            for round_ in range(1, args.rounds + 1):
                for kind, (samples, spoken) in streams.items():
                    for count in counts if kind == "short" else long_counts:
                        seconds = len(samples) / SAMPLE_RATE
                        seen = len(server.log().splitlines()) if server is not None else 0
                        outcomes = run_sessions(ws_url, samples, count, args.door, args.api_key, args.finish_timeout)
                        row = {"round": round_, "kind": kind,
                               **summarise(outcomes, refs[kind], seconds, spoken, args.max_lag),
                               "passes_per_call": pass_batching(server.log().splitlines()[seen:])
                               if server is not None else None}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            if server is not None:
                server.stop(60)
    ratios(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{args.door} door, {len(parts)} clips joined with {PAUSE_S} s pauses, 20 ms frames in real time; "
          "word latency: a word's end in the audio to its delta; lag: the last completed after its audio's end\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
