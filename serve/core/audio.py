"""Decode any audio or video file to 16 kHz mono PCM on disk, readable while it grows.

ffmpeg does the decoding (wav, flac, mp3, ogg/opus, m4a/aac, webm, mp4
video...); the Content-Type is never trusted, ffmpeg sniffs the bytes. The
samples go to a file in the request's scratch directory as 16-bit PCM (what
openai-whisper's and faster-whisper's own loaders produce), so a 3-hour
recording costs 345 MB of disk and no memory: the scheduler reads the 30 s it
decodes next. ``AudioFile`` lets readers wait for samples as they arrive, so
transcription starts before the decoding ends.

What ffmpeg says about the input is kept: a decoder error or a file that ends
before its header says (a cut upload) becomes a warning on the transcript,
not a failure. Limits bound the work a small body can buy: the audio's
length (``max_seconds``) and its sample rate (a WAV header may declare 1 Hz).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import AudioDecodeError, CancelledError, PayloadTooLargeError

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2  # s16le
MIN_INPUT_RATE = 4000
"""Below this an input cannot hold speech (telephony is 8 kHz); a tiny body
declaring 1 Hz would otherwise decode to hours of samples."""
_READ_BYTES = 10 * SAMPLE_RATE * BYTES_PER_SAMPLE  # 10 s of output per read
_MAX_WARNINGS = 5
_BENIGN = ("Guessed Channel Layout", "Estimating duration from bitrate", "deprecated pixel format")
"""ffmpeg warnings that say nothing about the audio's integrity."""


class AudioFile:
    """The decoded samples of one request: a growing PCM file and what is known of it so far."""

    def __init__(self, path: Path):
        self.path = path
        self.samples = 0
        """Samples decoded so far."""
        self.done = False
        self.error: Optional[BaseException] = None
        self.warnings: list[str] = []
        self.declared_seconds: Optional[float] = None
        self._changed = threading.Condition()

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def wait_for(self, samples: int, timeout: Optional[float] = None) -> int:
        """Block until ``samples`` are decoded or decoding ended; returns the samples available."""
        with self._changed:
            self._changed.wait_for(lambda: self.samples >= samples or self.done, timeout)
            return self.samples

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) as float32 in [-1, 1], as Whisper's loaders scale them."""
        end = min(end, self.samples)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        with open(self.path, "rb") as f:
            f.seek(start * BYTES_PER_SAMPLE)
            raw = f.read((end - start) * BYTES_PER_SAMPLE)
        return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0

    def _grow(self, samples: int) -> None:
        with self._changed:
            self.samples = samples
            self._changed.notify_all()

    def _finish(self, error: Optional[BaseException] = None) -> None:
        with self._changed:
            self.error = error
            self.done = True
            self._changed.notify_all()


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed: the container needs the ffmpeg binary on PATH")
    return path


def decode_to_file(source: Path, audio: AudioFile, max_seconds: float = 0.0,
                   cancelled: Callable[[], bool] = lambda: False) -> AudioFile:
    """Run ffmpeg on ``source``, appending samples to ``audio.path`` as they come. Runs in the caller's thread.

    Raises (and records on ``audio``) ``AudioDecodeError`` when nothing is
    decodable, ``PayloadTooLargeError`` past ``max_seconds`` (0: no limit),
    ``CancelledError`` when ``cancelled()`` turns true.
    """
    cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-threads", "0",
           "-i", str(source), "-vn", "-sn", "-dn",  # audio only, even from a video container
           "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)  # never blocks ffmpeg
    reader.start()
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else 0
    error: Optional[BaseException] = None
    try:
        with open(audio.path, "wb") as out:
            pending = b""
            while chunk := proc.stdout.read(_READ_BYTES):
                if cancelled():
                    raise CancelledError("the request was given up")
                pending += chunk
                whole = len(pending) - len(pending) % BYTES_PER_SAMPLE
                out.write(pending[:whole])
                out.flush()
                pending = pending[whole:]
                samples = audio.samples + whole // BYTES_PER_SAMPLE
                if limit and samples > limit:
                    raise _too_long(max_seconds)
                if audio.declared_seconds is None:  # until ffmpeg has printed the input's header
                    _check_header(_lines(stderr), source, max_seconds, audio)
                audio._grow(samples)
        code = proc.wait()
        reader.join()
        lines = _lines(stderr)
        _check_header(lines, source, max_seconds, audio)
        if audio.samples == 0:
            reason = _reason(lines, source)
            raise AudioDecodeError(f"could not decode the audio: {reason}" if code != 0 else
                                   f"the input holds no audio samples ({reason})")
        audio.warnings = _warnings(lines, source, audio)
    except BaseException as exc:
        error = exc
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        audio._finish(error)
    return audio


def _too_long(max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the audio is longer than {max_seconds:.0f} s, the most this endpoint decodes "
                                f"per request (WHISPER_MAX_AUDIO_SECONDS); split it, or raise the limit")


def _lines(stderr: list[bytes]) -> list[str]:
    return [ln.strip() for ln in b"".join(stderr).decode("utf-8", "replace").splitlines() if ln.strip()]


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_RATE = re.compile(r"Stream #\d+:\d+.*?: Audio: .*?, (\d+) Hz")


def _check_header(lines: list[str], source: Path, max_seconds: float, audio: AudioFile) -> None:
    """What the input declares, known before its samples: refuse at once what the limits forbid."""
    head = lines[:next((i for i, ln in enumerate(lines) if "Output #" in ln), len(lines))]
    for line in head:
        if audio.declared_seconds is None and (m := _DURATION.search(line)):
            h, mnt, s = m.groups()
            audio.declared_seconds = int(h) * 3600 + int(mnt) * 60 + float(s)
        if (m := _RATE.search(line)) and int(m.group(1)) < MIN_INPUT_RATE:
            raise AudioDecodeError(f"the audio's sample rate is {m.group(1)} Hz; speech needs at least "
                                   f"{MIN_INPUT_RATE} Hz")
    if max_seconds and audio.declared_seconds and audio.declared_seconds > max_seconds + 1:
        raise _too_long(max_seconds)


def _clean(line: str, source: Path) -> str:
    line = line.replace(str(source), "input")  # the temp path means nothing to a caller
    line = re.sub(r"^\[(\w+)[^\]]*@ 0x[0-9a-f]+\] ", r"\1: ", line)  # "[mp3 @ 0x55..] " -> "mp3: "
    return re.sub(r"\[(warning|error|fatal|info)\] ", "", line)


def _reason(lines: list[str], source: Path) -> str:
    problems = [_clean(ln, source) for ln in lines if "[error]" in ln or "[fatal]" in ln]
    return "; ".join(problems[-3:]) if problems else "ffmpeg found no audio stream"


def _warnings(lines: list[str], source: Path, audio: AudioFile) -> list[str]:
    """The decoder's own complaints, and a file that ends before its declared length."""
    wav, wav_seconds = _wav_header(source)
    found: list[str] = []
    for line in lines:
        if ("[warning]" in line or "[error]" in line) and not any(b in line for b in _BENIGN):
            if wav and any(b in line for b in _WAV_END):
                continue  # said below from the header, where it says anything
            text = _clean(line, source)
            if text not in found:
                found.append(text)
    estimated = any("Estimating duration from bitrate" in ln for ln in lines)
    declared = wav_seconds if wav_seconds is not None else None if estimated else audio.declared_seconds
    if declared:
        missing = declared - audio.seconds
        if missing > max(0.5, 0.02 * declared):
            found.insert(0, f"the input ends early: it declares {declared:.1f} s and "
                            f"{audio.seconds:.1f} s could be decoded (a cut or incomplete file?)")
    if _ogg_unended(source):  # an Ogg file's length is that of its last page: a cut one declares what it holds
        found.insert(0, "the input ends early: its last Ogg page does not end the stream (a cut or incomplete file?)")
    if found:
        found = found[:_MAX_WARNINGS] + ([f"... and {len(found) - _MAX_WARNINGS} more decoder messages"]
                                         if len(found) > _MAX_WARNINGS else [])
    return found


_WAV_END = ("Packet corrupt", "corrupt input packet", "Ignoring maximum wav data size")
"""What ffmpeg says of any WAV whose data ends before its header's size, a streamed WAV's
"unknown" size (0xFFFFFFFF) included: noise on a whole file, a riddle on a cut one."""


def _wav_header(source: Path) -> tuple[bool, Optional[float]]:
    """Whether ``source`` is a WAV file, and its length by its header (ffmpeg estimates it from the file's size).

    The length is None when the header does not say: a WAV written to a pipe
    has a data size of 0 or 0xFFFFFFFF.
    """
    with open(source, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False, None
    at, byte_rate = 12, 0
    while at + 8 <= len(head):
        chunk, size = head[at:at + 4], int.from_bytes(head[at + 4:at + 8], "little")
        if chunk == b"fmt " and at + 20 <= len(head):
            byte_rate = int.from_bytes(head[at + 16:at + 20], "little")
        if chunk == b"data":
            return True, size / byte_rate if byte_rate and size not in (0, 0xFFFFFFFF) else None
        at += 8 + size + (size & 1)
    return True, None


def _ogg_unended(source: Path) -> bool:
    """An Ogg file (opus, vorbis) whose last page lacks the end-of-stream flag: cut (ffmpeg says nothing)."""
    with open(source, "rb") as f:
        if f.read(4) != b"OggS":
            return False
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 65536))
        tail = f.read()
    last = tail.rfind(b"OggS")
    return last >= 0 and len(tail) > last + 5 and not tail[last + 5] & 0x04


def decode(path: Path | str, scratch: Optional[Path] = None) -> np.ndarray:
    """The whole file as one float32 array (short files, tests, benchmarks)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        audio = decode_to_file(Path(path), AudioFile(Path(tmp) / "audio.pcm"))
        return audio.read(0, audio.samples)
