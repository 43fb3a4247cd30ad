"""Decode any audio or video file to 16 kHz mono PCM on disk, readable while it grows.

ffmpeg does the decoding (wav, flac, mp3, ogg/opus, m4a/aac, webm, mp4
video...); the Content-Type is never trusted, ffmpeg sniffs the bytes. The
samples go to a file in the request's scratch directory as 16-bit PCM (what
openai-whisper's and faster-whisper's own loaders produce), so a 3-hour
recording costs 345 MB of disk and no memory: the scheduler reads the 30 s it
decodes next. ``AudioFile`` lets readers wait for samples as they arrive, so
transcription starts before the decoding ends. A WAV that is already 16 kHz
mono 16-bit PCM is copied as it is, without ffmpeg (``serve.core.wav``).

ffmpeg reads the body and nothing else: only the ``file`` and ``pipe``
protocols, and only the demuxers of the formats we accept (``DEMUXERS``), none
of which opens another file or URL (no playlists, file lists, image sequences).

What goes wrong is told apart, because only a whole input may give a complete answer:

* the input's fault: nothing decodable is ``AudioDecodeError`` (415); a file
  that is cut or damaged keeps what could be decoded, with ``warnings``
  saying so. ffmpeg exits 0 on every cut file we tried (wav, mp3, flac, ogg
  opus and vorbis, webm, ADTS aac: it says "File ended prematurely", "Packet
  corrupt"... or nothing); cut mp4/m4a (no moov atom) and a cut vorbis header
  exit 1 with no samples. The one non-zero exit after samples we could make
  is a damaged input too (AAC frames of random bytes: "Error reinitializing
  filters!", exit 1), so it is a warning that the decoder stopped there;
* our side's fault: ffmpeg killed by a signal (exit -N, or 255 with "received
  signal N" for the ones it catches: SIGTERM, SIGINT, SIGXCPU), ffmpeg unable
  to start (Popen raising, or exiting before it logged a line: a shared
  library that could not be mapped), ffmpeg out of memory, or a write to the
  scratch disk failing. These are ``ServiceFaultError`` (503 + Retry-After),
  whatever was decoded before: the transcript would pass for a whole one.

Limits bound the work a small body can buy: the audio's length
(``max_seconds``) and its sample rate (a WAV header may declare 1 Hz).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from ..errors import AudioDecodeError, CancelledError, PayloadTooLargeError, ServiceFaultError
from . import wav

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2  # s16le
MIN_INPUT_RATE = 4000
"""Below this an input cannot hold speech (telephony is 8 kHz); a tiny body
declaring 1 Hz would otherwise decode to hours of samples."""
_READ_BYTES = 10 * SAMPLE_RATE * BYTES_PER_SAMPLE  # 10 s of output per read
_MAX_WARNINGS = 5
_BENIGN = ("Guessed Channel Layout", "Estimating duration from bitrate", "deprecated pixel format")
"""ffmpeg warnings that say nothing about the audio's integrity."""
DEMUXERS = ("wav", "w64", "aiff", "caf", "au", "flac", "mp3", "aac", "ac3", "eac3", "amr", "ogg", "mov",
            "matroska", "asf", "avi", "flv", "mpegts", "mpeg", "wv")
"""What ffmpeg may read a body as (its demuxers' names; "mov" is mp4/m4a/3gp, "matroska" webm/mkv).
None opens another file or URL: left out are playlists (hls, dash), lists (concat), image
sequences (image2) and sdp. mov's external references stay off (its enable_drefs default)."""
PROTOCOLS = ("file", "pipe")
_WATCH_S = 0.2
"""How often a decode's cancel watcher looks whether the decode ended (a cancel wakes it at once)."""
_RETRY = "nothing was transcribed for this request; send it again"


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
        raise ServiceFaultError(f"the audio decoder (ffmpeg) is not installed on this server; {_RETRY}")
    return path


def decode_to_file(source: Path, audio: AudioFile, max_seconds: float = 0.0,
                   cancelled: Optional[threading.Event] = None) -> AudioFile:
    """Run ffmpeg on ``source``, appending samples to ``audio.path`` as they come. Runs in the caller's thread.

    Raises (and records on ``audio``) ``AudioDecodeError`` when nothing is
    decodable, ``PayloadTooLargeError`` past ``max_seconds`` (0: no limit),
    ``CancelledError`` as soon as ``cancelled`` is set (ffmpeg is killed at
    once, even while it waits on its input), ``ServiceFaultError`` when our
    side failed (see the module's doc).
    """
    cancelled = cancelled or threading.Event()
    stderr = _Stderr()
    ended = threading.Event()
    proc: Optional[subprocess.Popen] = None
    error: Optional[BaseException] = None
    try:
        header = wav.read_header(source)
        if header is not None and header.passes_through(SAMPLE_RATE):
            _copy_samples(source, header, audio, max_seconds, cancelled)
            return audio
        proc = _start(source)
        reader = threading.Thread(target=stderr.collect, args=(proc.stderr,), daemon=True)  # never blocks ffmpeg
        reader.start()
        threading.Thread(target=_kill_when, args=(cancelled, ended, proc), daemon=True).start()
        with _Scratch(audio) as out:
            sink = _Samples(out, audio, max_seconds, cancelled)
            while chunk := proc.stdout.read(_READ_BYTES):
                sink.add(chunk)
                if audio.declared_seconds is None:  # until ffmpeg has printed the input's header
                    _check_header(stderr.lines(), source, max_seconds, audio)
        code = proc.wait()
        reader.join()
        if cancelled.is_set():  # before the exit code: a cancel kills ffmpeg
            raise CancelledError("the request was given up")
        lines = stderr.lines()
        fault = _our_fault(code, lines, audio)
        if fault is not None:
            raise fault
        _check_header(lines, source, max_seconds, audio)
        if audio.samples == 0:
            reason = _reason(lines, source)
            raise AudioDecodeError(f"could not decode the audio: {reason}" if code != 0 else
                                   f"the input holds no audio samples ({reason})")
        audio.warnings = _warnings(lines, source, audio, code, stderr.dropped)
    except BaseException as exc:
        error = exc
        raise
    finally:
        ended.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        audio._finish(error)
    return audio


class _Samples:
    """Decoded bytes -> whole 16-bit samples in the PCM file, readers told, the length limit and a cancel obeyed."""

    def __init__(self, out: "_Scratch", audio: AudioFile, max_seconds: float, cancelled: threading.Event):
        self.out, self.audio, self.max_seconds, self.cancelled = out, audio, max_seconds, cancelled
        self.limit = int(max_seconds * SAMPLE_RATE) if max_seconds else 0
        self.pending = b""

    def add(self, chunk: bytes) -> None:
        if self.cancelled.is_set():
            raise CancelledError("the request was given up")
        self.pending += chunk
        whole = len(self.pending) - len(self.pending) % BYTES_PER_SAMPLE
        self.out.append(self.pending[:whole])
        self.pending = self.pending[whole:]
        samples = self.audio.samples + whole // BYTES_PER_SAMPLE
        if self.limit and samples > self.limit:
            raise _too_long(self.max_seconds)
        self.audio._grow(samples)


def _copy_samples(source: Path, header: wav.WavHeader, audio: AudioFile, max_seconds: float,
                  cancelled: threading.Event) -> None:
    """A WAV already in the engines' format: its samples copied as they are, no ffmpeg (``serve.core.wav``).

    What the ffmpeg path guarantees holds: the length limit from the header
    first, samples readable as they arrive, a data chunk shorter than its
    header says is a warning, a failing read or write of our disk is ours.
    """
    audio.declared_seconds = header.seconds
    if max_seconds and header.seconds and header.seconds > max_seconds + 1:
        raise _too_long(max_seconds)
    remaining = header.data_bytes
    try:
        body = open(source, "rb")
    except OSError as exc:
        raise ServiceFaultError(f"the request's body could not be read back ({exc.strerror or exc}); {_RETRY}") \
            from exc
    with body, _Scratch(audio) as out:
        sink = _Samples(out, audio, max_seconds, cancelled)
        body.seek(header.data_at)
        while remaining is None or remaining > 0:
            chunk = body.read(_READ_BYTES if remaining is None else min(_READ_BYTES, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            sink.add(chunk)
    if audio.samples == 0:
        raise AudioDecodeError("the input holds no audio samples (its WAV data chunk is empty)")
    audio.warnings = _warnings([], source, audio)


def _start(source: Path) -> subprocess.Popen:
    cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-threads", "0",
           "-protocol_whitelist", ",".join(PROTOCOLS), "-format_whitelist", ",".join(DEMUXERS),
           "-i", f"file:{source}",  # a path, whatever its name: never read as a URL or a pattern
           "-vn", "-sn", "-dn",  # audio only, even from a video container
           "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:  # EMFILE, ENOMEM, EAGAIN, a broken binary...
        raise ServiceFaultError(f"the audio decoder could not start ({exc.strerror or exc}); {_RETRY}") from exc


def _kill_when(cancelled: threading.Event, ended: threading.Event, proc: subprocess.Popen) -> None:
    """Kill ffmpeg the moment the request is cancelled, even while it reads nothing and writes nothing."""
    while not cancelled.wait(_WATCH_S):
        if ended.is_set():
            return
    if not ended.is_set():
        proc.kill()


class _Scratch:
    """The PCM file being written: a failing open or write (disk full, I/O error) is our fault, not the input's."""

    def __init__(self, audio: AudioFile):
        self.audio = audio
        self.file: Optional[BinaryIO] = None

    def __enter__(self) -> "_Scratch":
        self.file = self._io(lambda: open(self.audio.path, "wb"))
        return self

    def append(self, data: bytes) -> None:
        self._io(lambda: (self.file.write(data), self.file.flush()))

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self._io(self.file.close)
            return
        with contextlib.suppress(OSError):  # the error in flight says more than the close's
            self.file.close()

    def _io(self, action):
        try:
            return action()
        except OSError as exc:
            raise ServiceFaultError(f"the decoded audio could not be written to the server's scratch disk "
                                    f"({exc.strerror or exc}) after {self.audio.seconds:.0f} s of audio; "
                                    f"{_RETRY}") from exc


class _Stderr:
    """ffmpeg's messages, bounded: the first 256 kB (the input's header), the last 100 lines (why it ended)."""

    HEAD_BYTES = 256 * 1024
    TAIL_LINES = 100
    LINE_BYTES = 4096

    def __init__(self):
        self._head: list[str] = []
        self._head_bytes = 0
        self._tail: deque[str] = deque(maxlen=self.TAIL_LINES)
        self.dropped = 0
        """Warnings and errors neither kept at the head nor among the last lines."""
        self._lock = threading.Lock()

    def collect(self, stream: BinaryIO) -> None:
        for raw in iter(lambda: stream.readline(self.LINE_BYTES), b""):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            with self._lock:
                if not self._tail and self._head_bytes + len(raw) <= self.HEAD_BYTES:
                    self._head.append(line)
                    self._head_bytes += len(raw)
                    continue
                if len(self._tail) == self.TAIL_LINES and _COMPLAINT.search(self._tail[0]):
                    self.dropped += 1
                self._tail.append(line)

    def lines(self) -> list[str]:
        with self._lock:
            return [*self._head, *self._tail]


_COMPLAINT = re.compile(r"\[(warning|error|fatal|panic)\] ")
_LEVEL = re.compile(r"\[(panic|fatal|error|warning|info|verbose|debug)\] ")
_CAUGHT_SIGNAL = re.compile(r"received signal (\d+)")


def _our_fault(code: int, lines: list[str], audio: AudioFile) -> Optional[ServiceFaultError]:
    """The error when ffmpeg's end was our side's doing, not the input's (see the module's doc)."""
    after = f"after {audio.seconds:.0f} s of audio"
    caught = _CAUGHT_SIGNAL.search(" ".join(lines[-3:])) if code == 255 else None
    if code < 0 or caught:
        number = -code if code < 0 else int(caught.group(1))
        return ServiceFaultError(f"the audio decoder was killed ({_signal_name(number)}) {after}; {_RETRY}")
    if code != 0 and not any(_LEVEL.search(ln) for ln in lines):
        said = f": {lines[-1][:200]}" if lines else ""
        return ServiceFaultError(f"the audio decoder could not start (exit {code}{said}); {_RETRY}")
    # ENOMEM while opening the input is its own header asking for absurd sizes ("Failed to read extradata
    # of size 5396": a corrupt WAV): the input's fault. Once it is open, running out of memory is ours.
    opened = audio.samples > 0 or any("Input #" in ln for ln in lines)
    if code != 0 and opened and any("Cannot allocate memory" in ln for ln in lines[-5:]):
        return ServiceFaultError(f"the audio decoder ran out of memory {after}; {_RETRY}")
    return None


def _signal_name(number: int) -> str:
    try:
        return f"signal {number}, {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


def _too_long(max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the audio is longer than {max_seconds:.0f} s, the most this endpoint decodes "
                                f"per request (WHISPER_MAX_AUDIO_SECONDS); split it, or raise the limit")


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
    line = line.replace(f"file:{source}", "input").replace(str(source), "input")  # a temp path means nothing
    line = re.sub(r"^\[(\w+)[^\]]*@ 0x[0-9a-f]+\] ", r"\1: ", line)  # "[mp3 @ 0x55..] " -> "mp3: "
    return re.sub(r"\[(warning|error|fatal|info)\] ", "", line)


_NOT_ACCEPTED = re.compile(r"^\[(\w+) @ 0x[0-9a-f]+\] \[error\] Format not on whitelist")


def _reason(lines: list[str], source: Path) -> str:
    for line in lines:
        if m := _NOT_ACCEPTED.match(line):
            return (f"it is in the {m.group(1)} format, which this endpoint does not read (only audio and video "
                    f"files: playlists, file lists and image sequences are refused); send the audio itself")
    problems = [_clean(ln, source) for ln in lines if "[error]" in ln or "[fatal]" in ln]
    return "; ".join(problems[-3:]) if problems else "ffmpeg found no audio stream"


def _warnings(lines: list[str], source: Path, audio: AudioFile, code: int = 0, dropped: int = 0) -> list[str]:
    """The decoder's own complaints, a decoder that stopped on the input's error, and a file that ends
    before its declared length. ``dropped``: messages not kept (see ``_Stderr``)."""
    header = wav.read_header(source)
    wav_seconds = header.seconds if header is not None else None
    found: list[str] = []
    for line in lines:
        if ("[warning]" in line or "[error]" in line) and not any(b in line for b in _BENIGN):
            if header is not None and any(b in line for b in _WAV_END):
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
    if code != 0:  # not ours (_our_fault): the input stopped the decoder
        found.insert(0, f"the decoder stopped at {audio.seconds:.1f} s on an error in the input "
                        f"({_reason(lines, source)}): the rest of the input was not transcribed")
    more = len(found) - _MAX_WARNINGS + dropped if len(found) > _MAX_WARNINGS else dropped
    if more:
        found = found[:_MAX_WARNINGS] + [f"... and {more} more decoder messages"]
    return found


_WAV_END = ("Packet corrupt", "corrupt input packet", "Ignoring maximum wav data size")
"""What ffmpeg says of any WAV whose data ends before its header's size, a streamed WAV's
"unknown" size (0xFFFFFFFF) included: noise on a whole file, a riddle on a cut one."""


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
