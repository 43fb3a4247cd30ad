"""Stream an audio file (at real-time pace) or the microphone to a live server; print the words as they come.

    python -m serve.live FILE|mic [--url ws://localhost:8080] [--door sagemaker|openai] [--frame-ms 20]
        [--fast] [--format pcm16|pcm24|pcmu|pcma] [--language en] [--segments] [--api-key KEY]

Each turn's deltas are printed on one line as they arrive, then its completed transcript with the time it
came (seconds since the first audio frame). A file is anything ffmpeg reads; the microphone needs the
optional ``sounddevice`` package, and Ctrl-C ends it (the stream is committed, the last words awaited).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Iterator, Optional

import numpy as np

from .client import (COMPLETED, DELTA, FORMATS, PATHS, SAMPLE_RATE, LiveClosedError, LiveError, Received,
                     stream)


def decode(path: str) -> np.ndarray:
    """The file as 16 kHz mono int16 samples, by ffmpeg (any format it reads)."""
    try:
        done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, "-f", "s16le", "-ac", "1",
                               "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=False)
    except FileNotFoundError:
        raise SystemExit("ffmpeg is needed to read audio files (apt-get install ffmpeg)") from None
    if done.returncode != 0:
        raise SystemExit(f"ffmpeg could not read {path}: {done.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(done.stdout, np.int16)


def microphone(frame_ms: int, stop: threading.Event) -> Iterator[np.ndarray]:
    """16 kHz mono int16 blocks of ``frame_ms`` from the default input device, until ``stop`` is set."""
    try:
        import sounddevice
    except ImportError:
        raise SystemExit("the microphone needs the sounddevice package (and PortAudio): pip install sounddevice"
                         ) from None

    def blocks() -> Iterator[np.ndarray]:
        captured: queue.Queue = queue.Queue()
        with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                     blocksize=SAMPLE_RATE * frame_ms // 1000,
                                     callback=lambda data, frames, when, status: captured.put(data[:, 0].copy())):
            print("listening: Ctrl-C to end", file=sys.stderr)
            while not stop.is_set():
                try:
                    yield captured.get(timeout=0.1)
                except queue.Empty:
                    continue

    return blocks()


class Printer:
    """Deltas on one line per turn as they arrive; then the turn's completed transcript (and segments)."""

    def __init__(self, segments: bool, out=None):
        self.segments, self.out = segments, out or sys.stdout
        self.open_line: Optional[str] = None  # the item whose deltas the current line holds

    def _end_line(self) -> None:
        if self.open_line is not None:
            self.out.write("\n")
            self.open_line = None

    def __call__(self, received: Received) -> None:
        event = received.event
        if received.type == DELTA:
            if self.open_line != event.get("item_id"):
                self._end_line()
                self.open_line = event.get("item_id")
            self.out.write(event.get("delta", ""))
        elif received.type == COMPLETED:
            self._end_line()
            self.out.write(f"[{received.at:7.2f} s] {event.get('transcript', '').strip()}\n")
            if self.segments:
                for s in event.get("segments") or []:
                    self.out.write(f"    {s.get('start', 0):8.2f} -> {s.get('end', 0):8.2f}  "
                                   f"{str(s.get('text', '')).strip()}\n")
        elif received.type == "error":
            self._end_line()
            error = event.get("error") or {}
            self.out.flush()
            print(f"error: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        self.out.flush()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.live", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an audio file (anything ffmpeg reads), or 'mic'")
    parser.add_argument("--url", default="ws://localhost:8080", help="the server (default: %(default)s)")
    parser.add_argument("--door", choices=sorted(PATHS), default="sagemaker",
                        help="sagemaker: binary frames on /invocations-bidirectional-stream; openai: "
                             "input_audio_buffer.append on /v1/realtime (default: %(default)s)")
    parser.add_argument("--frame-ms", type=int, default=20)
    parser.add_argument("--fast", action="store_true", help="send a file as fast as possible, not in real time")
    parser.add_argument("--format", choices=list(FORMATS), default="pcm16", dest="input_format",
                        help="what goes on the wire (converted here from 16 kHz): default %(default)s")
    parser.add_argument("--language", help="the spoken language (e.g. en), else the server's default")
    parser.add_argument("--segments", action="store_true", help="ask for and print each turn's segments")
    parser.add_argument("--api-key", default=os.environ.get("WHISPER_API_KEY"),
                        help="sent as Authorization: Bearer (default: $WHISPER_API_KEY)")
    parser.add_argument("--finish-timeout", type=float, default=120.0,
                        help="seconds to wait for the last completed after the end of the audio")
    args = parser.parse_args(argv)

    session: dict = {}
    if args.language:
        session["audio"] = {"input": {"transcription": {"language": args.language}}}
    if args.segments:
        session["whisper"] = {"segments": True}
    stop = threading.Event()
    if args.source == "mic":
        def end_microphone(signum, frame):  # the first Ctrl-C ends the audio; a second one, everything
            stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, end_microphone)
        audio = microphone(args.frame_ms, stop)
    else:
        audio = decode(args.source)
        print(f"{args.source}: {len(audio) / SAMPLE_RATE:.1f} s to {args.url} ({args.door} door"
              f"{', as fast as possible' if args.fast else ', in real time'})", file=sys.stderr)
    try:
        result = stream(args.url, audio, door=args.door, frame_ms=args.frame_ms, realtime=not args.fast,
                        input_format=args.input_format, session=session or None, api_key=args.api_key,
                        finish_timeout=args.finish_timeout, on_event=Printer(args.segments))
    except LiveClosedError as e:
        hint = " (the server is at capacity or behind real time: try again later)" if e.code == 1013 else ""
        print(f"\n{e}{hint}", file=sys.stderr)
        return 1
    except LiveError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    except OSError as e:  # nothing listening, or a name that does not resolve
        print(f"\ncannot reach {args.url}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    late = f", the client up to {result.max_late_s * 1000:.0f} ms late on its pace" if result.max_late_s > 0.05 else ""
    print(f"{len(result.transcripts())} turns, {result.frames} frames{late}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
