"""How well the live algorithm reads, apart from how fast the machine is: passes in lockstep with the audio.

``bench/live.py`` streams at real-time pace, so how many passes a turn gets
(and so which words are committed early) depends on the machine and its load.
Here the same audio (``bench/live.py``'s clips joined with pauses) is fed to a
``LiveSession`` 20 ms at a time, and after each frame the session's passes run
to the end before the next frame: the schedule of an engine much faster than
real time, the same on every machine. Each pass goes through the real
scheduler on the embedded tiny.en (ctranslate2), as on the server.

Reported, for each ``context_chars`` given (0: passes without the session's
previous words as their prompt):

- WER against the text spoken, of the joined ``completed`` transcripts (the
  deltas joined: the same text) and of the turns' last passes alone (what the
  transcript would be if no word were committed before its turn ended);
- the same audio sent as a file, for comparison;
- words committed early (by a delta before the turn's end), and passes.

    python bench/live_accuracy.py [--context 0,200] [--clips 25]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.live import SAMPLE_RATE, clips, join, write_wav  # noqa: E402


def engine():
    """The embedded tiny.en on ctranslate2 with the server's default scheduler (as the tests load it)."""
    from tests.conftest import engine_for

    folder = Path(tempfile.mkdtemp(prefix="live-accuracy-"))
    return engine_for("ctranslate2", folder)


def run_session(eng, samples, context_chars: int) -> dict:
    from serve.core.options import resolve
    from serve.live.protocol import SessionConfig
    from serve.live.session import LiveLimits, LiveSession

    finals: list[str] = []

    def transcribe(pcm, options, cancelled):
        with tempfile.TemporaryDirectory(prefix="live-pass-") as scratch:
            path = write_wav(Path(scratch) / "turn.wav", pcm)
            resolved = resolve(options, eng.settings.defaults, eng.backend.capabilities)
            return eng.scheduler.submit(path, Path(scratch), resolved, continuing=True).wait(timeout=600)

    events: list[dict] = []
    session = LiveSession(SessionConfig(), transcribe, events.append, LiveLimits(context_chars=context_chars))
    passed = session._passed

    def record(job, result, error):  # the last pass's own reading of each turn
        if job.final and result is not None:
            finals.append(result.text)
        passed(job, result, error)

    session._passed = record
    frame = SAMPLE_RATE // 50
    for i in range(0, len(samples), frame):
        session.append(samples[i:i + frame])
        with session._cond:  # lockstep: every pass due now runs before the next frame
            session._cond.wait_for(lambda: not session._queue and session._running is None, 600)
    session.finish(600)
    kinds = [e["type"] for e in events]
    completed = [e["transcript"] for e in events if e["type"].endswith("transcription.completed")]
    early = 0
    for i, e in enumerate(events):  # a delta before its turn's committed event is an early commit
        if e["type"].endswith("transcription.delta"):
            committed_at = next((j for j, f in enumerate(events) if f["type"] == "input_audio_buffer.committed"
                                 and f.get("item_id") == e["item_id"]), len(events))
            early += len(e["delta"].split()) if i < committed_at else 0
    return {"completed": " ".join(t for t in completed if t), "finals": " ".join(finals),
            "passes": session.passes, "early_words": early, "turns": kinds.count("input_audio_buffer.committed")}


def main(argv=None) -> int:
    from tests import speech

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context", default="0,200", help="context_chars values to compare")
    parser.add_argument("--clips", type=int, default=25)
    args = parser.parse_args(argv)
    samples, spoken = join(clips(None, args.clips))
    eng = engine()
    with tempfile.TemporaryDirectory(prefix="live-accuracy-") as scratch:
        file_text = eng.transcribe(write_wav(Path(scratch) / "all.wav", samples)).text
    file_wer = speech.wer([spoken], [file_text])
    print(f"{args.clips} clips, {len(samples) / SAMPLE_RATE:.0f} s; the file's WER vs text: {file_wer:.3f}")
    print("\n| context chars | WER completed (vs file: +) | WER last passes alone | early words | passes | turns |")
    print("|---|---|---|---|---|---|")
    for chars in (int(c) for c in args.context.split(",")):
        r = run_session(eng, samples, chars)
        wer, finals = speech.wer([spoken], [r["completed"]]), speech.wer([spoken], [r["finals"]])
        print(f"| {chars} | {wer:.3f} ({wer - file_wer:+.3f}) | {finals:.3f} | {r['early_words']} "
              f"| {r['passes']} | {r['turns']} |", flush=True)
        print(json.dumps({"context_chars": chars, "wer": wer, "wer_last_passes": finals, **r}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
