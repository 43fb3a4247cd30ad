"""Decode any audio or video file to 16 kHz mono float32, in bounded memory.

ffmpeg does the decoding (it reads whatever users send: wav, flac, mp3,
ogg/opus, m4a/aac, webm, mp4 video...). We never trust the Content-Type:
ffmpeg sniffs the bytes. Long files are read as a stream and handed out in
windows cut at the quietest moment near the window's end, so a 3-hour
recording never sits in memory whole (3 h of float32 is 690 MB, and each
engine's spectrogram of it several times more).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import AudioDecodeError

SAMPLE_RATE = 16000
_BYTES_PER_SAMPLE = 4  # float32
_READ_SECONDS = 30  # ffmpeg output read per step
CUT_SEARCH_SECONDS = 30.0
"""A window is cut at the quietest 0.5 s in its last 30 s: a word cut in two
would be lost or garbled at the boundary."""


@dataclass(frozen=True)
class Window:
    offset: float
    """Seconds from the start of the file to this window's first sample."""
    audio: np.ndarray


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed: the container needs the ffmpeg binary on PATH")
    return path


def _start_ffmpeg(path: Path) -> subprocess.Popen:
    cmd = [
        _ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
        "-i", str(path),
        "-vn", "-sn", "-dn",  # audio only, even from a video container
        "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-",
    ]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _reason(stderr: bytes, path: Path) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    # ffmpeg prefixes messages with the input path; the temp path means nothing to a caller.
    lines = [ln.replace(str(path), "input") for ln in lines]
    return "; ".join(lines[-3:]) if lines else "ffmpeg found no audio stream"


def iter_windows(path: Path | str, window_seconds: float = 0.0) -> Iterator[Window]:
    """Yield the file's audio as consecutive windows of at most ``window_seconds``.

    ``window_seconds`` 0 yields the whole file as one window. Raises
    ``AudioDecodeError`` (with ffmpeg's reason) when the file holds no
    decodable audio.
    """
    path = Path(path)
    proc = _start_ffmpeg(path)
    window = int(window_seconds * SAMPLE_RATE) if window_seconds > 0 else 0
    pending = np.zeros(0, dtype=np.float32)
    offset = 0  # samples already yielded
    yielded_any = False
    try:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read(_READ_SECONDS * SAMPLE_RATE * _BYTES_PER_SAMPLE)
            if chunk:
                usable = len(chunk) - len(chunk) % _BYTES_PER_SAMPLE
                # a read may end mid-sample only at EOF; keep whole samples
                pending = np.concatenate([pending, np.frombuffer(chunk[:usable], dtype=np.float32)])
            while window and len(pending) >= window + SAMPLE_RATE:
                cut = quietest_cut(pending[:window])
                yield Window(offset / SAMPLE_RATE, pending[:cut].copy())
                yielded_any = True
                pending = pending[cut:]
                offset += cut
            if not chunk:
                break
        stderr = proc.stderr.read() if proc.stderr else b""
        code = proc.wait()
        if code != 0 and not yielded_any and len(pending) == 0:
            raise AudioDecodeError(f"could not decode the audio: {_reason(stderr, path)}")
        if not yielded_any and len(pending) == 0:
            raise AudioDecodeError(f"the input holds no audio samples ({_reason(stderr, path)})")
        if len(pending):
            yield Window(offset / SAMPLE_RATE, pending)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def decode(path: Path | str) -> np.ndarray:
    """The whole file as one array (short files, tests)."""
    return np.concatenate([w.audio for w in iter_windows(path, 0.0)])


def quietest_cut(audio: np.ndarray) -> int:
    """Index in the last ``CUT_SEARCH_SECONDS`` of ``audio`` at the middle of its quietest 0.5 s."""
    frame = SAMPLE_RATE // 2
    start = max(0, len(audio) - int(CUT_SEARCH_SECONDS * SAMPLE_RATE))
    tail = audio[start:]
    n = len(tail) // frame
    if n < 2:
        return len(audio)
    energy = (tail[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    return start + int(np.argmin(energy)) * frame + frame // 2
