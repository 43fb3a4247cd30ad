"""Where the known-speaker threshold goes (serve/diarization/known.py): same-voice vs other-voice similarities.

    python bench/known_speakers.py               # 6 conversations of 2-4 voices, references of other sentences
    python bench/known_speakers.py --quick       # 2 conversations

Each conversation (tests/conversations.py: espeak-ng voices far apart in
pitch and rate) is diarized by the embedded pipeline (no count given), each
diarized speaker is mapped to the voice it overlaps most, and its centroid
(``known.similarities``, ``MAX_SPEAKER_WINDOWS`` windows) is compared with
references made through ``parse_references`` from data URLs of sentences
the conversation never says:

- every conversation voice (``VOICES``, all four, so a voice absent from a
  2-voice conversation is a stranger to it), at 2.0-2.5 s (OpenAI's
  shortest), one sentence (about 3 s) and two or three sentences (6-9 s);
- ``STRANGERS``: espeak voices and variants not among ``VOICES``.

Then real speech: pyannote's sample.wav (two people), references cut from
it as recorded and passed through other channels (``real``).

Prints the similarity of each (speaker, reference) pair, grouped as same
voice / other voice, with their ranges and percentiles, and how many
speakers the current ``THRESHOLD`` would name right, wrongly, or not at all.
"""

from __future__ import annotations

import argparse
import collections
import base64
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.diarization import Diarizer, embedded  # noqa: E402
from serve.diarization import known  # noqa: E402
from tests import conversations, speech  # noqa: E402

STRANGERS = (
    ("en-us", None, 160),
    ("en-gb", None, 160),
    ("en-us+f3", None, 170),
    ("en-029", None, 160),
    ("en-gb-scotland", None, 150),
    ("en-us+m3", 60, 175),  # a conversation voice's variant at another pitch and rate
    ("en-gb+f4", 45, 150),
    ("en-us+m7", 40, 190),
)
"""(espeak voice, pitch, words a minute) of nobody in the conversations."""

CONVERSATIONS = ((2, 75, 11), (3, 90, 12), (4, 120, 14), (2, 60, 31), (3, 75, 32), (4, 100, 34))


def data_url(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def cut(path: Path, seconds: float, tmp: Path) -> Path:
    """The clip's first ``seconds`` (from its first sound) as a 16 kHz WAV."""
    import wave

    samples = speech.load_pcm(path)
    loud = np.flatnonzero(np.abs(samples) > 1e-3)
    samples = samples[loud[0]: loud[0] + int(seconds * 16000)]
    out = tmp / f"{path.stem}-{seconds}.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((samples * 32767).astype(np.int16).tobytes())
    return out


def references(voices, sentences: list[str], tmp: Path) -> list[tuple[str, str, known.Reference]]:
    """(voice key, kind, reference) for every voice at three lengths; sentences used once each."""
    out = []
    pool = iter(sentences)
    for voice, pitch, rate in voices:
        key = f"{voice}/p{pitch}/s{rate}"
        one = speech.speak(next(pool), voice, speed=rate, pitch=pitch).path
        long_text = " ".join(next(pool) for _ in range(3))
        long = speech.speak(long_text, voice, speed=rate, pitch=pitch).path
        if speech.duration(long) > known.MAX_SECONDS:
            long = cut(long, known.MAX_SECONDS - 0.5, tmp)
        short = cut(speech.speak(next(pool), voice, speed=rate, pitch=pitch).path, 2.2, tmp)
        for kind, path in (("2.2s", short), ("1 sentence", one), ("3 sentences", long)):
            [ref] = known.parse_references([f"{key} {kind}"], [data_url(path)], scratch=tmp)
            out.append((key, kind, ref))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import tempfile

    embedder = embedded(threads=1)
    same: list[tuple[float, str]] = []
    other: list[tuple[float, str]] = []
    stranger: list[tuple[float, str]] = []
    named = collections.Counter()
    voices = [f"{v}/p{p}/s{r}" for v, p, r in conversations.VOICES]
    strangers = [f"{v}/p{p}/s{r}" for v, p, r in (STRANGERS[0], STRANGERS[6])]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs = None
        for speakers, seconds, seed in CONVERSATIONS[:2] if args.quick else CONVERSATIONS:
            rec = conversations.conversation(speakers, seconds, seed=seed)
            said = " ".join(t for _, t in rec.texts)
            if refs is None:
                fresh = [s for s in speech.story_sentences(400, seed=991) if s not in said]
                refs = references(conversations.VOICES + STRANGERS, fresh[::-1], tmp)
            audio = speech.load_pcm(rec.path)
            started = time.perf_counter()
            diarizer = Diarizer(embedder)
            diarizer.feed(audio)
            turns = diarizer.finish()
            took = time.perf_counter() - started
            truth = _truth(rec, turns)
            started = time.perf_counter()
            scores, order = known.similarities(turns, lambda a, b: audio[a:b], [r for _, _, r in refs], embedder)
            took_known = time.perf_counter() - started
            print(f"\n{speakers} voices, {rec.seconds:.0f} s, seed {seed}: {len({t.speaker for t in turns})} found "
                  f"(diarized in {took:.1f} s; similarities of {len(order)} speakers x {len(refs)} references "
                  f"in {took_known:.1f} s)")
            for row, speaker in enumerate(order):
                voice = voices[truth[speaker]] if truth[speaker] is not None else "?"
                print(f"  speaker {speaker} = {voice}")
                for col, (key, kind, _) in enumerate(refs):
                    group = same if key == voice else other if key in voices else stranger
                    group.append((float(scores[row, col]), f"{voice} vs {key} {kind}"))
                best = [f"{refs[c][0]} {refs[c][1]}: {scores[row, c]:.2f}" for c in np.argsort(-scores[row])[:4]]
                print("    best:", "; ".join(best))
            # naming as a request would: (a) a reference of every voice in it; (b) of voices absent from it only
            absent = [v for v in voices if v not in voices[:speakers]] + strangers
            for kind in ("2.2s", "1 sentence", "3 sentences"):
                present = [r for key, k, r in refs if k == kind and key in voices[:speakers]]
                named_now = known.name_speakers(turns, lambda a, b: audio[a:b], present, embedder)
                for speaker in order:
                    got, want = named_now.get(speaker), voices[truth[speaker]]
                    named["all present: " + ("none" if got is None else "right" if got.startswith(want + " ")
                                             else "wrong")] += 1
                others = [r for key, k, r in refs if k == kind and key in absent][:known.MAX_REFERENCES]
                named_now = known.name_speakers(turns, lambda a, b: audio[a:b], others, embedder)
                named["absent only: named (wrong)"] += len(named_now)
                named["absent only: none"] += len(order) - len(named_now)
    for title, values in (("same voice", same), ("another of VOICES", other), ("a stranger", stranger)):
        x = np.array([v for v, _ in values])
        print(f"\n{title}: n={len(x)} min {x.min():.3f} p5 {np.percentile(x, 5):.3f} median {np.median(x):.3f} "
              f"p95 {np.percentile(x, 95):.3f} max {x.max():.3f}")
        for kind in ("2.2s", "1 sentence", "3 sentences"):
            y = np.array([v for v, what in values if what.endswith(kind)])
            print(f"  {kind:12s} min {y.min():.3f} median {np.median(y):.3f} max {y.max():.3f}")
    print("\nlowest same-voice:", sorted(same)[:5])
    print("highest another of VOICES:", sorted(other)[-5:])
    print("highest stranger:", sorted(stranger)[-5:])
    print(f"\nnaming at THRESHOLD {known.THRESHOLD} (speakers): {dict(sorted(named.items()))}")
    real(embedder)


def real(embedder) -> None:
    """pyannote's sample.wav (two real people): references cut from it, as recorded and through other channels.

    The speaker's centroid leaves out the reference's own span. "noisy": white
    noise at 20 dB SNR; "phone": 300-3400 Hz, 8 kHz, Opus at 8 kb/s; "mp3": a
    5 kHz low-pass, an echo, MP3 at 32 kb/s: a reference recorded elsewhere.
    """
    import io
    import subprocess
    import tempfile
    import wave

    from serve.diarization.diarizer import SpeakerTurn

    sample = conversations.pyannote_sample()
    audio = speech.load_pcm(sample.path)
    diarizer = Diarizer(embedder)
    diarizer.feed(audio)
    turns = diarizer.finish()
    truth = _truth(sample, turns, label=lambda s: s)

    def wav_bytes(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
        return buf.getvalue()

    def channel(x: np.ndarray, kind: str) -> bytes:
        if kind == "noisy":
            rms = float(np.sqrt((x ** 2).mean()))
            return wav_bytes(x + np.random.default_rng(0).normal(size=len(x)).astype(np.float32) * rms * 0.1)
        if kind == "as recorded":
            return wav_bytes(x)
        args = {"phone": ["-af", "highpass=f=300,lowpass=f=3400,volume=0.5", "-ar", "8000", "-c:a", "libopus",
                          "-b:a", "8k", "-f", "ogg"],
                "mp3": ["-af", "lowpass=f=5000,aecho=0.8:0.7:40:0.3", "-c:a", "libmp3lame", "-b:a", "32k",
                        "-f", "mp3"]}[kind]
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "in.wav").write_bytes(wav_bytes(x))
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", f"{tmp}/in.wav", *args, f"{tmp}/out"],
                           check=True)
            return Path(tmp, "out").read_bytes()

    spans = {"speaker90": [(10.57, 14.5), (18.6, 21.49)], "speaker91": [(22.0, 28.0), (14.6, 17.9), (22.0, 24.5)]}
    same, other = [], []
    print("\npyannote sample.wav, two real people: similarity of each reference to each diarized speaker")
    for kind in ("as recorded", "noisy", "phone", "mp3"):
        for who, cuts in spans.items():
            for a, b in cuts:
                url = "data:audio/wav;base64," + base64.b64encode(channel(audio[int(a * 16000):int(b * 16000)],
                                                                            kind)).decode()
                [ref] = known.parse_references([who], [url])
                kept = []
                for t in turns:  # the reference's own span left out of the centroids
                    parts = ((t.start, min(t.end, a)), (max(t.start, b), t.end))
                    kept += [SpeakerTurn(s, e, t.speaker) for s, e in parts if e > s]
                scores, order = known.similarities(kept, lambda x, y: audio[x:y], [ref], embedder)
                for speaker, score in zip(order, scores[:, 0]):
                    (same if truth[speaker] == who else other).append(float(score))
                print(f"  {kind:12s} {who} {a:5.1f}-{b:4.1f} s: " +
                      ", ".join(f"{truth[s]} {v:.3f}" for s, v in zip(order, scores[:, 0])))
    print(f"  same person:    n={len(same)} min {min(same):.3f} median {np.median(same):.3f} max {max(same):.3f}")
    print(f"  another person: n={len(other)} min {min(other):.3f} median {np.median(other):.3f} max {max(other):.3f}")
    print(f"  at THRESHOLD {known.THRESHOLD}: same missed {sum(v < known.THRESHOLD for v in same)}, "
          f"another over it {sum(v >= known.THRESHOLD for v in other)}")


def _truth(rec, turns, label=lambda s: int(s[3:])) -> dict[int, int | None]:
    """Each diarized speaker's voice: the one its turns overlap most."""
    out = {}
    for speaker in {t.speaker for t in turns}:
        overlap: dict[int, float] = {}
        for t in turns:
            if t.speaker != speaker:
                continue
            for a, b, name in rec.turns:
                shared = min(b, t.end) - max(a, t.start)
                if shared > 0:
                    v = label(name)
                    overlap[v] = overlap.get(v, 0.0) + shared
        out[speaker] = max(overlap, key=overlap.get) if overlap else None
    return out


if __name__ == "__main__":
    main()
