"""Audio with known speakers, to score diarization: espeak-ng conversations and pyannote's sample.

``conversation`` strings turns of 1-15 s by 2-4 espeak-ng voices set far apart
in pitch and rate (espeak's default variants sound too alike to a speaker
embedder), with pauses between turns, and records who speaks when: the
reference is each turn's stretches of sound, so a pause inside a turn is not
speech in it. ``pyannote_sample`` is the real two-speaker recording that the
pyannote.audio wheel ships (30 s, MIT) with its reference RTTM; the wheel is
fetched once with pip into ``.cache/`` and only those two files are kept.
``cpwer`` scores a diarized transcript against a recording's ``texts``.
Used by tests/diarization and bench/diarization.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import tempfile
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests import speech

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "conversations"
SAMPLE_RATE = 16000

VOICES = (
    ("en-us+m3", 25, 150),
    ("en-gb+f4", 85, 185),
    ("en-us+m7", 5, 125),
    ("en-gb-x-rp+f2", 65, 210),
)
"""(espeak voice, pitch, words a minute): far apart, as people at one table are."""

_SHORT = ("Yes, exactly.", "I see.", "Right, go on.", "No, not really.", "Sure.", "Okay, fine.",
          "Hmm, maybe.", "Of course.", "Really?", "That is true.")
"""Replies of about a second."""

PYANNOTE_AUDIO = "pyannote.audio==4.0.7"
"""The wheel whose ``pyannote/audio/sample/`` holds sample.wav and sample.rttm."""


@dataclass(frozen=True)
class Recording:
    path: Path
    turns: list[tuple[float, float, str]]
    """(start, end, speaker) in seconds: who speaks when."""
    texts: list[tuple[str, str]]
    """(speaker, text) of each turn in order, for speaker-attributed WER."""

    @property
    def speakers(self) -> int:
        return len({s for _, _, s in self.turns})

    @property
    def seconds(self) -> float:
        with wave.open(str(self.path)) as w:
            return w.getnframes() / w.getframerate()


def _stretches(samples: np.ndarray, threshold_db: float = -50.0, bridge_s: float = 0.25) -> list[tuple[int, int]]:
    """[start, end) samples of each stretch of sound (10 ms frames above ``threshold_db``), short gaps bridged."""
    frame = SAMPLE_RATE // 100
    n = len(samples) // frame
    power = (samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(10 * np.log10(power + 1e-12) > threshold_db)
    if len(loud) == 0:
        return []
    out = []
    start = prev = loud[0]
    for i in loud[1:]:
        if i - prev > bridge_s * 100:
            out.append((start * frame, (prev + 1) * frame))
            start = i
        prev = i
    out.append((start * frame, (prev + 1) * frame))
    return out


def _turn_text(rng: random.Random, sentences: list[str]) -> str:
    """A reply of about a second, or one to four sentences (3-14 s)."""
    if rng.random() < 0.25:
        return rng.choice(_SHORT)
    return " ".join(sentences.pop() for _ in range(rng.randint(1, 4)))


def conversation(speakers: int, seconds: float, seed: int = 0) -> Recording:
    """A cached conversation of ``speakers`` voices lasting at least ``seconds``; next turn by someone else."""
    key = hashlib.sha1(f"{speakers}|{seconds}|{seed}|{VOICES[:speakers]}|fair".encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    wav_path, meta_path = CACHE / f"{key}.wav", CACHE / f"{key}.json"
    if wav_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return Recording(wav_path, [tuple(t) for t in meta["turns"]], [tuple(t) for t in meta["texts"]])
    rng = random.Random(seed)
    sentences = speech.story_sentences(int(seconds / 2) + 20, seed=seed + 11)
    rng.shuffle(sentences)
    parts, turns, texts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], []
    at = len(parts[0])
    speaker = None
    spoken = dict.fromkeys(range(speakers), 0)
    while at < seconds * SAMPLE_RATE:
        others = [s for s in range(speakers) if s != speaker]
        # mostly the one who has said least: everyone has their say, as around a table
        speaker = min(others, key=spoken.get) if rng.random() < 0.6 else rng.choice(others)
        voice, pitch, rate = VOICES[speaker]
        text = _turn_text(rng, sentences)
        samples = speech.load_pcm(speech.speak(text, voice, speed=rate, pitch=pitch).path)
        stretches = _stretches(samples)
        if not stretches:
            continue
        samples = samples[stretches[0][0]: stretches[-1][1]]  # espeak's own leading and trailing silence off
        label = f"spk{speaker}"
        turns += [((at + a - stretches[0][0]) / SAMPLE_RATE, (at + b - stretches[0][0]) / SAMPLE_RATE, label)
                  for a, b in stretches]
        texts.append((label, text))
        spoken[speaker] += len(samples)
        gap = np.zeros(int(rng.uniform(0.3, 1.2) * SAMPLE_RATE), np.float32)
        parts += [samples, gap]
        at += len(samples) + len(gap)
    audio = np.concatenate(parts)
    tmp = wav_path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    meta_path.write_text(json.dumps({"turns": turns, "texts": texts}))
    tmp.rename(wav_path)
    return Recording(wav_path, turns, texts)


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, speaker) of each SPEAKER line of an RTTM file."""
    out = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return out


def pyannote_sample() -> Recording:
    """pyannote.audio's sample.wav (two speakers, 30 s) and its reference, taken from the wheel once."""
    folder = CACHE / "pyannote-sample"
    wav_path, rttm = folder / "sample.wav", folder / "sample.rttm"
    if not (wav_path.exists() and rttm.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", tmp, PYANNOTE_AUDIO], check=True)
            wheel = next(Path(tmp).glob("pyannote_audio-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for name in ("sample.rttm", "sample.wav"):  # the wav last: its presence says both are there
                    (folder / name).write_bytes(z.read(f"pyannote/audio/sample/{name}"))
    return Recording(wav_path, read_rttm(rttm), [])


def score(recording: Recording, turns) -> dict:
    """DER (pyannote.metrics, collar 0.25 s) with overlapping speech scored and skipped, and the speaker counts.

    ``turns``: objects with ``start``, ``end`` (seconds) and ``speaker``.
    """
    import warnings

    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for start, end, speaker in recording.turns:
        reference[Segment(start, end)] = speaker
    for turn in turns:
        hypothesis[Segment(turn.start, turn.end)] = str(turn.speaker)
    uem = Timeline([Segment(0.0, recording.seconds)])  # the whole file is scored: no approximated extent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        included = DiarizationErrorRate(collar=0.25)(reference, hypothesis, uem=uem, detailed=True)
        excluded = DiarizationErrorRate(collar=0.25, skip_overlap=True)(reference, hypothesis, uem=uem)
    total = included["total"] or 1.0
    return {"der": included["diarization error rate"], "der_no_overlap": excluded,
            "missed": included["missed detection"] / total, "false_alarm": included["false alarm"] / total,
            "confusion": included["confusion"] / total,
            "speakers": recording.speakers, "found": len({t.speaker for t in turns})}


def _errors(reference: str, hypothesis: str) -> int:
    """Word edits (substitutions, deletions, insertions) turning ``reference`` into ``hypothesis`` (normalised)."""
    import jiwer

    if not reference.split() or not hypothesis.split():  # jiwer refuses an empty reference
        return len(reference.split()) + len(hypothesis.split())
    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions


def cpwer(reference: list[tuple[str, str]], hypothesis: list[tuple[str, str]]) -> dict:
    """Concatenated minimum-permutation WER (CHiME-6's cpWER) of (speaker, text) pieces, each list in order.

    Each speaker's pieces are joined in order and normalised
    (``speech.normalize``); the reference and hypothesis speakers are paired
    one to one (scipy's ``linear_sum_assignment`` on the word errors of each
    pair) to fewest errors in all. A reference speaker left without a partner
    counts all its words as deleted, a hypothesis speaker left over all its
    words as inserted. Returns ``cpwer`` (errors / reference words),
    ``errors``, ``words`` and ``mapping`` (hypothesis speaker -> reference
    speaker, for the pairs made).
    """
    from scipy.optimize import linear_sum_assignment

    def joined(pieces):
        texts: dict[str, list[str]] = {}
        for speaker, text in pieces:
            texts.setdefault(speaker, []).append(text)
        return {s: speech.normalize(" ".join(t)) for s, t in texts.items()}

    ref, hyp = joined(reference), joined(hypothesis)
    ref_names, hyp_names = list(ref), list(hyp)
    size = max(len(ref_names), len(hyp_names))
    cost = np.zeros((size, size), dtype=np.int64)  # rows: reference speakers, then none; columns: hypothesis
    for i in range(size):
        for j in range(size):
            r = ref[ref_names[i]] if i < len(ref_names) else ""
            h = hyp[hyp_names[j]] if j < len(hyp_names) else ""
            cost[i, j] = _errors(r, h)
    rows, cols = linear_sum_assignment(cost)
    errors = int(cost[rows, cols].sum())
    words = sum(len(t.split()) for t in ref.values())
    mapping = {hyp_names[j]: ref_names[i] for i, j in zip(rows, cols) if i < len(ref_names) and j < len(hyp_names)}
    return {"cpwer": errors / max(words, 1), "errors": errors, "words": words, "mapping": mapping}


def wer(reference: str, hypothesis: str) -> float:
    """Plain WER of two whole transcripts after ``speech.normalize``, no speakers (the floor under cpWER)."""
    r = speech.normalize(reference)
    return _errors(r, speech.normalize(hypothesis)) / max(len(r.split()), 1)
