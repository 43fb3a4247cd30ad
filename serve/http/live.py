"""Live transcription over WebSockets: SageMaker's bidirectional stream and OpenAI's Realtime URL, one handler.

SageMaker opens ``/invocations-bidirectional-stream`` (a caller's
``ModelInvocationPath`` of ``v1/realtime`` reaches the same handler). Binary
frames are audio in the session's format; text frames are OpenAI Realtime
client events (``serve.live.protocol``). Every answer is an OpenAI server
event in a text frame. The session itself is ``serve.live.session``; here
are the socket, the worker's capacity, the timeouts and the drain.

Every pass of a session is a short request to the runtime (``_transcriber``):
its audio is written as a 16 kHz WAV (copied as it is, no ffmpeg) into a
scratch folder and submitted to the scheduler, batched with file requests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import wave
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
from flask import Flask
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ..core.options import TranscribeOptions
from ..core.results import Transcription
from ..core.runtime import Runtime
from ..errors import CancelledError
from ..live import protocol
from ..live.audio_in import AudioInput
from ..live.session import LiveLimits, LiveSession, SessionClosing
from ..metrics import record as metrics
from ..settings import Settings
from .errors import error_type, status_of
from .inputs import ScratchDir
from .jobs import events_log

log = logging.getLogger(__name__)

PATHS = ("/invocations-bidirectional-stream", "/v1/realtime")
POLL_S = 0.25
"""How often a quiet session looks at its timeouts and the drain."""
DRAIN_S = 20.0
"""On SIGTERM, how long a session waits for its last pass (gunicorn's graceful_timeout is 25 s)."""
FINISH_S = 120.0
"""At an idle or length close, how long a session waits for its last pass."""
TRY_AGAIN_LATER = 1013
POLICY = 1008
MAX_MESSAGE_BYTES = 2 * protocol.MAX_TEXT_FRAME_BYTES
"""A message this large is not read at all: the library closes with 1009. Between the protocol's frame
limits and this, the frame gets an ``error`` event and the session goes on."""


@dataclass
class LiveSessions:
    """The live sessions of one worker: how many it holds, whether they keep up, and the drain."""

    limit: Callable[[], int]
    """The most sessions at once (read when one opens: it depends on the loaded engine's device)."""
    sessions: set[LiveSession] = field(default_factory=set)
    draining: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, session_factory) -> LiveSession:
        """A new session, or ``SessionClosing`` (1013) when the worker is full, behind, or stopping."""
        with self.lock:
            if self.draining.is_set():
                raise SessionClosing(TRY_AGAIN_LATER, "server_shutting_down",
                                     "the server is shutting down; connect again (to another instance)")
            limit = self.limit()
            if len(self.sessions) >= limit:
                raise SessionClosing(TRY_AGAIN_LATER, "server_busy",
                                     f"this worker holds its most live sessions ({limit}, "
                                     "WHISPER_MAX_LIVE_SESSIONS); connect again later")
            behind = [s for s in self.sessions if s.lag_seconds > s.limits.lag_warn_s]
            if behind:
                raise SessionClosing(TRY_AGAIN_LATER, "server_busy",
                                     f"{len(behind)} live sessions here are behind real time; connect again later")
            session = session_factory()
            self.sessions.add(session)
            metrics.live_session(len(self.sessions))
            return session

    def leave(self, session: LiveSession) -> None:
        with self.lock:
            self.sessions.discard(session)
            metrics.live_session(len(self.sessions))

    def drain(self) -> None:
        """SIGTERM: every session commits its open turn, sends its ``completed`` and closes (1000)."""
        self.draining.set()


def register(app: Flask, settings: Settings, runtime: Runtime) -> LiveSessions:
    """Add the two WebSocket routes to ``app``; returns the worker's sessions (for the drain)."""
    live = LiveSessions(lambda: settings.max_live_sessions or (
        4 if runtime.require_ready().device.kind == "cpu" else 16))
    app.extensions["whisper.live"] = live
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_MESSAGE_BYTES}  # pings answered by the library
    sock = Sock(app)
    transcribe = _transcriber(settings, runtime)

    def handler(ws) -> None:
        _serve(ws, settings, runtime, live, transcribe)

    for path in PATHS:
        sock.route(path, endpoint=f"live{path.replace('/', '_')}")(handler)
    return live


class _Socket:
    """The WebSocket, sent to from two threads (the reader and the session's passes)."""

    def __init__(self, ws):
        self.ws = ws
        self._lock = threading.Lock()

    def send(self, event: dict) -> None:
        with self._lock:
            try:
                self.ws.send(json.dumps(event))
            except ConnectionClosed:  # the reader finds out too, and ends the session
                pass

    def close(self, code: int, reason: str) -> None:
        with self._lock:
            try:
                self.ws.close(code, reason[:120])  # a close frame's reason is at most 123 bytes
            except ConnectionClosed:
                pass


def _serve(ws, settings: Settings, runtime: Runtime, live: LiveSessions, transcribe) -> None:
    out = _Socket(ws)
    try:
        runtime.require_ready()
        session = live.admit(lambda: LiveSession(protocol.SessionConfig(), transcribe, out.send, LiveLimits()))
    except SessionClosing as closing:
        metrics.live_refused()
        _close(out, closing)
        return
    except Exception as exc:  # noqa: BLE001 - not ready, or the engine cannot serve: try again later
        metrics.live_refused()
        _close(out, SessionClosing(TRY_AGAIN_LATER, "server_not_ready", str(exc)))
        return
    opened = last_heard = time.monotonic()
    audio_in = AudioInput(session.config.audio)
    log.info("live session %s opened (%d in this worker)", session.id, len(live.sessions))
    out.send(protocol.session_created(session.config, session.id))
    try:
        ending = None
        while True:
            # Once ending, only what has already arrived is read: it is part of the last turn.
            data = ws.receive(timeout=0 if ending is not None else POLL_S)
            if data is not None:
                last_heard = time.monotonic()
                try:
                    if isinstance(data, bytes):
                        session.append(audio_in.feed(data))
                    else:
                        audio_in = _event(data, session, audio_in, runtime, out)
                except protocol.ProtocolError as exc:
                    out.send(protocol.error_event(exc))
                continue
            if ending is not None:  # all of it is in: the open turn gets its completed, then the close
                session.finish(timeout=DRAIN_S if live.draining.is_set() else FINISH_S)
                _close(out, ending)
                return
            now = time.monotonic()
            ending = _ending(settings, live, now - opened, now - last_heard)
    except ConnectionClosed:
        log.info("live session %s: the client left", session.id)  # its passes are dropped below
    except SessionClosing as closing:
        session.abort()
        _close(out, closing)
    except Exception as exc:  # noqa: BLE001 - this session ends; the worker and the other sessions go on
        log.exception("live session %s failed", session.id)
        session.abort()
        _close(out, SessionClosing(1011, "server_error", f"the session failed on the server's side ({exc})"))
    finally:
        session.abort()
        live.leave(session)


def _event(text: str, session: LiveSession, audio_in: AudioInput, runtime: Runtime, out: _Socket) -> AudioInput:
    """One client event; returns the audio decoder (a new one when the format changed)."""
    event_id, event = protocol.parse_client_event(text, session.config)
    try:
        if isinstance(event, protocol.Update):
            if event.config.options.diarize:
                raise protocol.ProtocolError("invalid_value", "diarize is not available in live sessions: speakers "
                                             "are known only once the whole audio is heard; send the recording "
                                             "to /invocations with diarize=true", "session.whisper.options.diarize")
            # what /invocations would refuse, refused now (a pass is never diarized: see _transcriber)
            runtime.resolve(replace(event.config.options, diarize=False))
            if event.config.audio != session.config.audio:
                audio_in = AudioInput(event.config.audio)
            session.update(event.config)
            out.send(protocol.session_updated(session.config))
        elif isinstance(event, protocol.Append):
            session.append(audio_in.feed(event.audio))
        elif isinstance(event, protocol.Commit):
            session.append(audio_in.flush())  # what the resampler still holds ends this turn
            session.commit()
        elif isinstance(event, protocol.Clear):
            session.clear()
    except protocol.ProtocolError as exc:
        exc.event_id = exc.event_id or event_id
        raise
    except SessionClosing:
        raise
    except Exception as exc:  # noqa: BLE001 - an option the model refuses: this event's error
        raise protocol.ProtocolError(getattr(exc, "code", None) or "invalid_value", str(exc),
                                     event_id=event_id) from exc
    return audio_in


def _ending(settings: Settings, live: LiveSessions, age: float, quiet: float) -> Optional[SessionClosing]:
    if live.draining.is_set():
        return SessionClosing(1000, "", "the server is shutting down")
    if quiet >= settings.live_idle_s:
        return SessionClosing(POLICY, "session_idle", f"nothing was received for {quiet:.0f} s "
                                                      "(WHISPER_LIVE_IDLE_S); the session is closed")
    if age >= settings.live_max_session_s:
        return SessionClosing(POLICY, "session_expired", f"the session reached its longest, "
                                                         f"{settings.live_max_session_s:.0f} s "
                                                         "(WHISPER_LIVE_MAX_SESSION_S); connect again to go on")
    return None


def _close(out: _Socket, closing: SessionClosing) -> None:
    if closing.error_code:
        out.send(protocol.error_event(protocol.ProtocolError(closing.error_code, closing.message,
                                                             error_type="server_error")))
    out.close(closing.code, closing.message)


def _transcriber(settings: Settings, runtime: Runtime):
    """A session's pass: its samples as a WAV in a scratch folder, one request to the scheduler."""

    def transcribe(samples: np.ndarray, options: TranscribeOptions, cancelled: threading.Event,
                   last: bool = False) -> Transcription:
        scratch = ScratchDir(settings.scratch_dir)
        try:
            path = scratch.path / "turn.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(samples.astype("<i2").tobytes())
            calls_at_submit = runtime.scheduler.calls
            # a pass is never diarized, whatever the server's defaults say (WHISPER_DIARIZE)
            job = runtime.submit(path, scratch.path, replace(options, diarize=False), continuing=True, urgent=last)
        except BaseException:
            scratch.close()
            raise
        record = {"event": "live_pass", "audio_seconds": round(len(samples) / 16000, 3), "last": last,
                  "engine_calls_at_submit": calls_at_submit}

        def poll() -> None:
            if cancelled.is_set():
                raise CancelledError("the live session ended")

        try:
            for kind, value in job.events(timeout=settings.timeout, poll=poll):
                if kind == "done":
                    record.update(status=200, engine_call=job.first_call)
                    return value
            raise AssertionError("unreachable")
        except BaseException as exc:
            runtime.scheduler.cancel(job, exc)
            record.update(status=status_of(exc), error_type=error_type(exc))
            raise
        finally:
            job.release(scratch.close)
            events_log.info(json.dumps(record))  # one line per pass, as for every invocation

    return transcribe
