"""One request's diarization, beside its transcription: who speaks in its audio, then speakers on its transcript.

``Diarizing`` starts when the request enters the scheduler. A thread of its
own reads the request's decoded audio as ffmpeg writes it (the same growing
file the scheduler cuts windows from) and feeds the engine's stream, so
diarization runs while the windows are decoded, and only the stream's own
state is held (the embedded engine: its embeddings). The embedded engine
reads only the speech the scheduler's VAD finds for the transcription
(``Job.speech``), padded by ``PAD_MS`` rather than 400 ms, so the VAD runs
once per request (without the VAD, it finds its own). The thread holds the
job's files while it reads them, and stops when the job is cancelled (a
client that left, a timeout, an error).

``labelled`` lays the speakers over the finished transcription (``assign``):
a speaker per segment and word, segments split where the speaker changes,
and each speaker's speaking time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Mapping, Optional

from ..core.audio import AudioFile
from ..core.job import POLL_S, Job
from ..core.options import SpeakerCounts
from ..core.results import SpeakerTime, Transcription
from ..core.segments import pad
from ..errors import RequestTimeoutError, ServiceFaultError
from .assign import assign, speaking_times
from .diarizer import SpeakerTurn
from .engine import DiarizationEngine, Stream
from .regions import PAD_MS, SAMPLE_RATE

READ_S = 30.0
"""Audio read per step: each read is this long, or what ffmpeg has written so far."""

Naming = Callable[[list[SpeakerTurn], AudioFile], Mapping[int, str]]
"""(turns, the request's audio) -> the names of the speakers that match a known speaker."""


class Diarizing:
    """The speaker turns of one job's whole audio, found in a thread of their own as the audio is decoded."""

    def __init__(self, job: Job, engine: DiarizationEngine, counts: SpeakerCounts, naming: Optional[Naming] = None):
        self.job = job
        self._engine = engine
        self._counts = counts
        self._naming = naming
        self._done = threading.Event()
        self._stop = threading.Event()
        self._turns: Optional[list[SpeakerTurn]] = None
        self._names: Mapping[int, str] = {}
        self._error: Optional[BaseException] = None
        self.seconds: Optional[float] = None
        """Time the diarization took, from its first read to its last turn."""
        self.vad = "shared" if job.speech is not None else "own"
        """Whose VAD found the speech: the transcription's (``Job.speech``), or the engine's own."""
        job.hold()  # the job's files stay until this has read them (see Job.release)
        self._thread = threading.Thread(target=self._run, name=f"diarize-{job.id}", daemon=True)
        self._thread.start()

    def result(self, timeout: float, poll: Callable[[], None] = lambda: None) -> tuple[list[SpeakerTurn],
                                                                                       Mapping[int, str]]:
        """(turns, known speakers' names), once the whole audio is diarized.

        Raises ``RequestTimeoutError`` after ``timeout`` seconds, what ``poll`` raises, or a
        ``ServiceFaultError`` if the diarization failed.
        """
        deadline = time.monotonic() + timeout
        while not self._done.wait(min(POLL_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise RequestTimeoutError(f"speaker diarization did not finish within {timeout:.0f} s "
                                          "(SAGEMAKER_MODEL_SERVER_TIMEOUT)")
            poll()
        if self._error is not None:
            raise ServiceFaultError(f"speaker diarization failed: {self._error}; nothing was transcribed for this "
                                    "request, send it again") from self._error
        if self._turns is None:
            raise ServiceFaultError("speaker diarization stopped before the end of the audio; send the request again")
        return self._turns, self._names

    def cancel(self) -> None:
        """Nobody waits for these speakers any more (the client left, the deadline passed): stop reading."""
        self._stop.set()

    @property
    def _stopped(self) -> bool:
        return self._stop.is_set() or self.job.cancelled.is_set()

    def _run(self) -> None:
        audio = self.job.audio
        try:
            start = time.monotonic()
            stream = self._engine.stream(self._counts)
            if self.job.speech is not None:
                self._read_speech(stream)
            else:
                self._read_audio(stream)
            if self._stopped or audio.error is not None:
                return  # the request has failed already and says why; no turns
            turns = stream.finish()
            self._names = self._naming(turns, audio) if self._naming and turns else {}
            self._turns = turns
            self.seconds = time.monotonic() - start
        except BaseException as exc:  # noqa: BLE001 - reported to the request by ``result``
            self._error = exc
        finally:
            self.job.drop()
            self._done.set()

    def _read_audio(self, stream: Stream) -> None:
        audio, read, step = self.job.audio, 0, int(READ_S * 16000)
        while not self._stopped:
            available = audio.wait_for(read + step, timeout=POLL_S)
            if available > read:
                end = min(available, read + step)
                stream.feed(audio.read(read, end))
                read = end
            elif audio.done:
                return

    def _read_speech(self, stream: Stream) -> None:
        """The transcription VAD's regions, padded as the engine's own VAD pads them (``PAD_MS``, but never
        past the middle of a pause: ``segments.pad``): the last region waits for the next one's start."""
        audio, padding = self.job.audio, PAD_MS * SAMPLE_RATE // 1000
        waiting: list[tuple[int, int]] = []
        floor = 0
        """Where the last region given to the stream ended."""
        done = False
        while not done and not self._stopped:
            regions, done = self.job.speech.take(POLL_S)
            waiting += regions
            ready = pad(waiting, padding, floor, audio.samples)[:None if done else -1]
            for start, end in ready:
                stream.speech(start, audio.read(start, end))
                floor = end
            del waiting[:len(ready)]


def labelled(t: Transcription, turns: list[SpeakerTurn], names: Mapping[int, str] = {},
             hide_words: bool = False) -> Transcription:
    """``t`` with speakers on its segments and words (split at each change) and each speaker's speaking time.

    ``hide_words``: the words were decoded only to split segments; they leave the answer.
    """
    segments = assign(t.segments, turns, names)
    if hide_words:
        segments = tuple(replace(s, words=None) for s in segments)
    times = speaking_times(turns, names)
    return replace(t, segments=segments, speakers=tuple(SpeakerTime(s, seconds) for s, seconds in times.items()))

