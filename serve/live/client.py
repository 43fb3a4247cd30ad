"""A small client for live transcription over WebSockets (the wire contract of issue 16), for tests, CLI, bench.

``stream(url, samples)`` opens one WebSocket session on either door, sends 16 kHz mono int16 audio in
frames paced against a monotonic clock (frame k leaves at k * frame_ms after the first, whatever the
sends cost, so the pace never drifts), records every server event with its arrival time, and ends the
stream as the contract says: ``input_audio_buffer.commit``, then every committed item's ``completed``
(or the ``input_audio_buffer_commit_empty`` error), then a normal close.

    from serve.live.client import stream
    result = stream("ws://127.0.0.1:8080", samples)          # door="openai" for /v1/realtime
    print(result.text())

A server close before the end (1013 when busy or lagging, 1008 idle or expired, 1000 while draining)
raises ``LiveClosedError``; what was received up to then is its ``result``.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

SAMPLE_RATE = 16000
PATHS = {"sagemaker": "/invocations-bidirectional-stream", "openai": "/v1/realtime?intent=transcription"}
FORMATS = {  # the session.update format object, and the rate and bytes per sample sent
    "pcm16": ({"type": "audio/pcm", "rate": 16000}, 16000, 2),
    "pcm24": ({"type": "audio/pcm", "rate": 24000}, 24000, 2),
    "pcmu": ({"type": "audio/pcmu"}, 8000, 1),
    "pcma": ({"type": "audio/pcma"}, 8000, 1),
}
HANDSHAKE_TIMEOUT_S = 30.0

COMMITTED = "input_audio_buffer.committed"
SPEECH_STARTED = "input_audio_buffer.speech_started"
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"


@dataclass(frozen=True)
class Received:
    at: float
    """Seconds since the first audio frame was sent (negative for what came before it: session.created...)."""
    event: dict

    @property
    def type(self) -> str:
        return self.event.get("type", "")


@dataclass(frozen=True)
class LiveResult:
    events: list[Received]
    closed_code: Optional[int]
    """The close code the server sent (1000 answering ours after a complete stream), None if unknown."""
    closed_reason: str
    frames: int = 0
    """Audio frames (binary frames or input_audio_buffer.append events) sent."""
    max_late_s: float = 0.0
    """The latest any frame left after its due time (k * frame_ms): the client's own pace."""
    commit_at: Optional[float] = None
    """When the final input_audio_buffer.commit was sent (seconds, like ``Received.at``)."""
    complete: bool = False
    """The end of the stream went as the contract says: the commit answered, every committed item completed."""
    accept_s: Optional[float] = None
    """From opening the connection to the server's accept (the WebSocket handshake's answer)."""

    def of(self, *types: str) -> list[Received]:
        return [r for r in self.events if r.type in types]

    def transcripts(self) -> list[str]:
        """Each turn's completed transcript, in the order the turns were committed (the audio's order)."""
        committed: dict[str, int] = {}
        for r in self.of(COMMITTED):
            committed.setdefault(r.event.get("item_id"), len(committed))
        done = self.of(COMPLETED)
        order = {id(r): committed.get(r.event.get("item_id"), len(committed) + i) for i, r in enumerate(done)}
        return [r.event.get("transcript", "") for r in sorted(done, key=lambda r: order[id(r)])]

    def text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts() if t.strip())

    def deltas(self) -> list[tuple[float, str, str]]:
        """(at, item_id, text) of every delta, in arrival order."""
        return [(r.at, r.event.get("item_id", ""), r.event.get("delta", "")) for r in self.of(DELTA)]

    def errors(self) -> list[dict]:
        return [r.event.get("error", {}) for r in self.of("error")]


class LiveError(Exception):
    """A live session that did not end as the contract says; ``result`` holds what was received."""

    def __init__(self, message: str, result: Optional[LiveResult] = None):
        super().__init__(message)
        self.result = result


class LiveClosedError(LiveError):
    """The server closed the session before its end (1013 busy or lagging, 1008 idle or expired...)."""

    @property
    def code(self) -> Optional[int]:
        return self.result.closed_code if self.result else None


class LiveTimeoutError(LiveError):
    """The stream's end was not answered in time (a committed item without its completed)."""


class LiveRefusedError(LiveError):
    """The server refused the WebSocket handshake (401 without the right key, 404 without the route...)."""


# ---- audio -------------------------------------------------------------------------------------


def ulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 mu-law of int16 samples, as ITU-T G.191's reference encoder (ulaw_compress) computes it."""
    x = np.asarray(samples, np.int16).astype(np.int32)
    magnitude = np.minimum(np.where(x < 0, ~x, x) >> 2, 0x1FFF - 33) + 33  # 14 bits; 1's complement below 0
    segment = 1 + np.frexp(magnitude >> 6)[1]  # 1 + bit length
    code = ((8 - segment) << 4) | (15 - ((magnitude >> segment) & 0xF))
    return np.where(x >= 0, code | 0x80, code).astype(np.uint8).tobytes()


def alaw_encode(samples: np.ndarray) -> bytes:
    """G.711 A-law of int16 samples, as ITU-T G.191's reference encoder (alaw_compress) computes it."""
    x = np.asarray(samples, np.int16).astype(np.int32)
    magnitude = np.where(x < 0, ~x, x) >> 4  # 12 bits; 1's complement below 0
    bits = np.frexp(magnitude)[1]
    segmented = (magnitude >> np.maximum(bits - 5, 0)) - 16 + ((bits - 4) << 4)
    code = np.where(magnitude > 15, segmented, magnitude)
    return (np.where(x >= 0, code | 0x80, code) ^ 0x55).astype(np.uint8).tobytes()


def _encode(samples: np.ndarray, input_format: str) -> bytes:
    """Samples already at the format's rate, as the bytes the session expects."""
    if input_format == "pcmu":
        return ulaw_encode(samples)
    if input_format == "pcma":
        return alaw_encode(samples)
    return np.asarray(samples, "<i2").tobytes()


def encode_audio(samples: np.ndarray, input_format: str = "pcm16") -> bytes:
    """16 kHz int16 samples in ``input_format`` (pcm16, pcm24: resampled, pcmu / pcma: 8 kHz, G.711)."""
    _, rate, _ = FORMATS[input_format]
    samples = np.asarray(samples, np.int16)
    if rate != SAMPLE_RATE and len(samples):
        import soxr

        samples = soxr.resample(samples, SAMPLE_RATE, rate)
    return _encode(samples, input_format)


def frame_bytes(input_format: str, frame_ms: int) -> int:
    _, rate, width = FORMATS[input_format]
    return rate * frame_ms // 1000 * width


def _frames(source: Union[np.ndarray, Iterable[np.ndarray]], input_format: str, frame_ms: int) -> Iterator[bytes]:
    """The audio as frames of ``frame_ms`` in the session format (the last one may be shorter)."""
    size = frame_bytes(input_format, frame_ms)
    if isinstance(source, np.ndarray):
        data = encode_audio(source, input_format)
        for i in range(0, len(data), size):
            yield data[i:i + size]
        return
    # chunks as they come (a microphone): resampled as one stream, re-cut into frames
    _, rate, _ = FORMATS[input_format]
    resampler = None
    if rate != SAMPLE_RATE:
        import soxr

        resampler = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="int16")
    pending = b""
    for chunk in itertools.chain(source, [None]):
        last = chunk is None
        samples = np.zeros(0, np.int16) if last else np.asarray(chunk, np.int16).reshape(-1)
        if resampler is not None:
            samples = resampler.resample_chunk(samples, last=last)
        pending += _encode(samples, input_format)
        while len(pending) >= size or (last and pending):
            yield pending[:size]
            pending = pending[size:]


class Pacer:
    """Frame k is due at ``start + k * frame_s``: a slow send delays one frame, never the ones after it."""

    def __init__(self, start: float, frame_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.start, self.frame_s, self.clock, self.sleep = start, frame_s, clock, sleep
        self.max_late = 0.0

    def wait(self, k: int) -> None:
        due = self.start + k * self.frame_s
        now = self.clock()
        if now < due:
            self.sleep(due - now)
        else:
            self.max_late = max(self.max_late, now - due)


# ---- the session -------------------------------------------------------------------------------


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def session_update(input_format: str = "pcm16", session: Optional[dict] = None) -> dict:
    """The GA ``session.update`` saying the format, with ``session`` merged into its ``session`` object."""
    body = {"type": "transcription", "audio": {"input": {"format": FORMATS[input_format][0]}}}
    return {"type": "session.update", "event_id": _event_id(), "session": _merge(body, session or {})}


def _initial_update(door: str, input_format: str, session: Optional[dict]) -> Optional[dict]:
    """The session.update to send first: on the openai door, for another format, or to carry ``session``.

    A binary-only client in the default format needs no configuration (the contract)."""
    if door not in PATHS:
        raise ValueError(f"door must be one of {sorted(PATHS)}, not {door!r}")
    if input_format not in FORMATS:
        raise ValueError(f"input_format must be one of {sorted(FORMATS)}, not {input_format!r}")
    return session_update(input_format, session) if door == "openai" or input_format != "pcm16" or session else None


def _event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


class _Ending:
    """What the end of a stream waits for: our commit answered, and every committed item completed.

    The answer to our commit is the ``commit_empty`` error, or a ``committed`` that comes after the commit
    was sent. A turn the server's VAD ended just before our commit also has its ``committed`` come then,
    but after its ``speech_stopped``: such a ``committed`` only answers the commit once nothing more came
    for ``GRACE_S`` (our own turn's ``committed``, or ``commit_empty``, follows it at once). A turn the VAD
    saw start must be committed too.
    """

    GRACE_S = 1.0

    def __init__(self):
        self.started: set[str] = set()
        self.stopped: set[str] = set()
        self.committed: set[str] = set()
        self.completed: set[str] = set()
        self.commit_id: Optional[str] = None
        self.answered = False
        self.maybe_answered = False
        self.last_event = 0.0

    def see(self, event: dict, now: float) -> None:
        kind, item = event.get("type"), event.get("item_id")
        self.last_event = now
        if kind == SPEECH_STARTED:
            self.started.add(item)
        elif kind == SPEECH_STOPPED:
            self.stopped.add(item)
        elif kind == COMMITTED:
            self.committed.add(item)
            if self.commit_id is not None:
                if item in self.stopped:
                    self.maybe_answered = True
                else:
                    self.answered = True
        elif kind == COMPLETED:
            self.completed.add(item)
        elif kind == "error" and self.commit_id is not None:
            error = event.get("error") or {}
            if error.get("code") == COMMIT_EMPTY and error.get("event_id") in (None, self.commit_id):
                self.answered = True

    def done(self, now: float) -> bool:
        settled = self.started <= self.committed and self.committed <= self.completed
        return settled and (self.answered or (self.maybe_answered and now - self.last_event >= self.GRACE_S))


def stream(url: str, samples: Union[np.ndarray, Iterable[np.ndarray]], *, door: str = "sagemaker",
           frame_ms: int = 20, realtime: bool = True, input_format: str = "pcm16", session: Optional[dict] = None,
           api_key: Optional[str] = None, finish_timeout: float = 120,
           on_event: Optional[Callable[[Received], None]] = None) -> LiveResult:
    """Stream 16 kHz mono int16 ``samples`` to the server at ``url`` (ws://host:port) and return what it said.

    ``samples`` is an array (sent at real-time pace, or as fast as possible with ``realtime=False``) or an
    iterable of chunks (a microphone: sent as they come). ``door``: "sagemaker" sends binary frames to
    ``/invocations-bidirectional-stream``, "openai" sends ``input_audio_buffer.append`` events to
    ``/v1/realtime``. A ``session.update`` goes first (and its ``session.updated`` is awaited) on the
    openai door, for another ``input_format``, or when ``session`` has settings to merge into it.
    ``on_event`` is called on the receiving thread with each event as it arrives.
    """
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    update = _initial_update(door, input_format, session)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    opening = time.monotonic()
    try:
        with connect(url.rstrip("/") + PATHS[door], additional_headers=headers, compression=None,
                     max_size=2 ** 24, open_timeout=HANDSHAKE_TIMEOUT_S) as ws:
            accepted = time.monotonic() - opening
            return _run(ws, door, samples, frame_ms, realtime, input_format, update, finish_timeout, on_event,
                        accepted)
    except InvalidStatus as e:  # the handshake's answer (raised by connect only)
        body = e.response.body.decode(errors="replace")[:300] if e.response.body else ""
        raise LiveRefusedError(f"the server refused the WebSocket: HTTP {e.response.status_code} {body}") from None


def _run(ws, door: str, samples, frame_ms: int, realtime: bool, input_format: str, update: Optional[dict],
         finish_timeout: float, on_event: Optional[Callable[[Received], None]],
         accept_s: Optional[float] = None) -> LiveResult:
    """One session on an open connection (websockets', or ``_SdkConnection``): handshake, audio, end, close."""
    from websockets.exceptions import ConnectionClosed

    live = _Session(ws, door, on_event)
    pacer: Optional[Pacer] = None
    try:
        live.handshake(update)
        if live.refused is None:
            if realtime and isinstance(samples, np.ndarray):
                pacer = Pacer(live.t0, frame_ms / 1000)
            sender = threading.Thread(target=live.send_all, daemon=True, name="live-sender",
                                      args=(_frames(samples, input_format, frame_ms), pacer))
            sender.start()
            live.receive_until_done(finish_timeout)
            sender.join()
    except ConnectionClosed:
        pass  # the server's close: said below
    finally:
        live.stop.set()
        ws.close()
    result = replace(live.result(ws.close_code, ws.close_reason or "", pacer.max_late if pacer else 0.0),
                     accept_s=accept_s)
    if live.failure is not None:
        raise live.failure
    if live.refused is not None:
        raise LiveError(f"the server refused the session.update: {live.refused.get('code')}: "
                        f"{live.refused.get('message')}", result)
    if not result.complete:
        if live.timed_out:
            pending = sorted(live.ending.committed - live.ending.completed)
            raise LiveTimeoutError(f"no end of stream within {finish_timeout:g} s of the commit (items without "
                                   f"their completed: {pending})", result)
        raise LiveClosedError(_closed_message(result), result)
    return result


def _closed_message(result: LiveResult) -> str:
    errors = result.errors()
    said = f": {errors[-1].get('code')}: {errors[-1].get('message')}" if errors else ""
    return f"the server closed the session ({result.closed_code} {result.closed_reason}){said}"


class _Session:
    """One connection's two sides: the sender thread and the receiving loop (the caller's thread)."""

    def __init__(self, ws, door: str, on_event: Optional[Callable[[Received], None]]):
        self.ws, self.door, self.on_event = ws, door, on_event
        self.events: list[Received] = []
        self.ending = _Ending()
        self.t0: float = 0.0
        self.frames = 0
        self.commit_at: Optional[float] = None
        self.stop = threading.Event()
        self.failure: Optional[BaseException] = None
        self.timed_out = False
        self.refused: Optional[dict] = None
        self._commit_sent_mono: Optional[float] = None

    def _record(self, message, arrived: float) -> None:
        if isinstance(message, bytes):  # the contract has none: kept, so that a test can see it
            event = {"type": "binary", "bytes": len(message)}
        else:
            event = json.loads(message)
        received = Received(arrived - self.t0, event)
        self.ending.see(event, arrived)
        self.events.append(received)
        if self.on_event is not None:
            self.on_event(received)

    def handshake(self, update: Optional[dict]) -> None:
        """session.created, then our session.update and its answer; the clock starts after them.

        Until then events are held, and recorded with their (negative) times once the clock has started.
        """
        early: list[tuple[object, float]] = []
        wanted = {"session.created"} | ({"session.updated"} if update else set())
        try:
            if update:
                self.ws.send(json.dumps(update))
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
            while wanted and self.refused is None:
                try:
                    message = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise LiveTimeoutError(f"no {' and '.join(sorted(wanted))} within {HANDSHAKE_TIMEOUT_S:g} s")
                early.append((message, time.monotonic()))
                event = json.loads(message) if isinstance(message, str) else {}
                wanted.discard(event.get("type"))
                error = event.get("error") or {}
                if event.get("type") == "error" and update and error.get("event_id") == update["event_id"]:
                    self.refused = error
        finally:
            self.t0 = time.monotonic()
            for message, arrived in early:
                self._record(message, arrived)

    def send_all(self, frames: Iterator[bytes], pacer: Optional[Pacer]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for k, frame in enumerate(frames):
                if self.stop.is_set():
                    return
                if pacer is not None:
                    pacer.wait(k)
                if self.door == "sagemaker":
                    self.ws.send(frame)
                else:
                    self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                             "audio": base64.b64encode(frame).decode()}))
                self.frames += 1
            commit = {"type": "input_audio_buffer.commit", "event_id": _event_id()}
            self.ending.commit_id = commit["event_id"]
            self._commit_sent_mono = time.monotonic()
            self.commit_at = self._commit_sent_mono - self.t0
            self.ws.send(json.dumps(commit))
        except ConnectionClosed:
            pass  # the receiving loop sees the close and says why
        except BaseException as e:  # noqa: BLE001 - a failing source (a microphone) ends the session, reported
            self.failure = e
            self.stop.set()

    def receive_until_done(self, finish_timeout: float) -> None:
        while not self.ending.done(time.monotonic()):
            if self.failure is not None:
                return
            if self._commit_sent_mono is not None and time.monotonic() > self._commit_sent_mono + finish_timeout:
                self.timed_out = True
                return
            try:
                message = self.ws.recv(timeout=0.25)
            except TimeoutError:
                continue
            self._record(message, time.monotonic())

    def result(self, code: Optional[int], reason: str, max_late: float) -> LiveResult:
        return LiveResult(list(self.events), code, reason, self.frames, max_late, self.commit_at,
                          self.ending.done(time.monotonic()))


# ---- through AWS: InvokeEndpointWithBidirectionalStream -----------------------------------------


def stream_sagemaker_endpoint(endpoint_name: str, region: str, samples: Union[np.ndarray, Iterable[np.ndarray]], *,
                              door: str = "sagemaker", frame_ms: int = 20, realtime: bool = True,
                              input_format: str = "pcm16", session: Optional[dict] = None,
                              target_variant: Optional[str] = None, finish_timeout: float = 120,
                              on_event: Optional[Callable[[Received], None]] = None,
                              endpoint_uri: Optional[str] = None, ca_file: Optional[str] = None) -> LiveResult:
    """``stream`` through a SageMaker endpoint: InvokeEndpointWithBidirectionalStream, with AWS's Python SDK.

    Needs Python >= 3.12 and ``aws-sdk-sagemaker-runtime-http2[awscrt]`` (0.12; ``make sdk-env`` builds
    ``.venv-sdk`` with it): ``AsyncSageMakerRuntimeHTTP2Client`` over the SDK's CRT transport, the only one
    of its transports that streams both ways (HTTP/2). Credentials come from the SDK's default chain
    (``AWS_ACCESS_KEY_ID``..., the shared files, the instance's role); the connection goes to
    ``https://runtime.sagemaker.{region}.amazonaws.com:8443`` (``endpoint_uri`` overrides it), signed with
    SigV4 for ``sagemaker``, each event signed too. ``ca_file``: a PEM file of the CAs to trust instead of the
    system's (a stand-in for SageMaker, a private proxy).

    SageMaker hands each request PayloadPart to the container's WebSocket as a frame (DataType BINARY: a
    binary frame, UTF8: a text frame) and each frame back as a PayloadPart, so the session is the same as
    ``stream``'s: same handshake, pacing, end of stream and result (but for the close code, which the SDK
    does not report: ``closed_code`` is None, ``closed_reason`` names a ModelStreamError or
    InternalStreamFailure). ``door="openai"`` reaches the container's ``/v1/realtime`` through
    ModelInvocationPath instead of ``/invocations-bidirectional-stream``.

    Run by tests/live/test_sagemaker_sdk.py against a stand-in for SageMaker's router
    (tests/live/sagemaker_router.py) in front of the real server; never against AWS here.
    """
    try:
        from aws_sdk_sagemaker_runtime_http2.client import AsyncSageMakerRuntimeHTTP2Client
        from aws_sdk_sagemaker_runtime_http2.config import AsyncSageMakerRuntimeHTTP2Config
        from aws_sdk_sagemaker_runtime_http2.models import (InvokeEndpointWithBidirectionalStreamInput,
                                                            RequestPayloadPart, RequestStreamEventPayloadPart,
                                                            ResponseStreamEventPayloadPart)
        from smithy_core.exceptions import SmithyError
        from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig
    except ImportError as e:
        raise RuntimeError("stream_sagemaker_endpoint needs AWS's bidirectional streaming SDK, which needs Python "
                           f">= 3.12: pip install 'aws-sdk-sagemaker-runtime-http2[awscrt]==0.12.0' ({e})") from None
    import asyncio

    update = _initial_update(door, input_format, session)
    path, _, query = PATHS[door].lstrip("/").partition("?")
    request = InvokeEndpointWithBidirectionalStreamInput(
        endpoint_name=endpoint_name, target_variant=target_variant,
        model_invocation_path=None if door == "sagemaker" else path, model_query_string=query or None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="live-sdk")
    thread.start()

    async def open_stream():
        # the default transport (aiohttp, HTTP/1.1) cannot stream both ways: the SDK refuses it for this call
        transport = AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True))
        if ca_file is not None:
            _trust_only(transport, ca_file)
        config = await AsyncSageMakerRuntimeHTTP2Config.resolve(
            region=region, transport=transport,
            endpoint_uri=endpoint_uri or f"https://runtime.sagemaker.{region}.amazonaws.com:8443")
        client = AsyncSageMakerRuntimeHTTP2Client(config=config)
        try:
            duplex = await client.invoke_endpoint_with_bidirectional_stream(request)
            _, output = await duplex.await_output()
        except BaseException:
            await client.close()
            raise
        return client, duplex, output

    connection: Optional[_SdkConnection] = None
    try:
        try:
            client, duplex, output = asyncio.run_coroutine_threadsafe(open_stream(), loop).result(HANDSHAKE_TIMEOUT_S)
        except SmithyError as e:  # the service's refusal (403, 404, ModelError...), or no connection at all
            raise LiveRefusedError(f"no stream from SageMaker: {type(e).__name__}: {e}") from e
        except TimeoutError:
            raise LiveTimeoutError(f"no stream from SageMaker within {HANDSHAKE_TIMEOUT_S:g} s") from None
        connection = _SdkConnection(loop, client, duplex, output,
                                    lambda data, kind: RequestStreamEventPayloadPart(
                                        value=RequestPayloadPart(bytes_=data, data_type=kind)),
                                    ResponseStreamEventPayloadPart)
        return _run(connection, door, samples, frame_ms, realtime, input_format, update, finish_timeout, on_event)
    finally:
        if connection is not None:
            connection.release()
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(HANDSHAKE_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _cancel_the_rest() -> None:
    """The SDK's tasks still pending (a refused stream's body writer): ended, not destroyed with the loop."""
    import asyncio

    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _trust_only(transport, ca_file: str) -> None:
    """The CRT transport trusting the CAs in ``ca_file`` instead of the system's.

    smithy-http 0.6 has no TLS setting (its source says "TODO: Support TLS configuration"), so the
    transport's TLS context is replaced; a later SDK without that attribute fails here, not silently."""
    from awscrt.io import ClientTlsContext, TlsContextOptions

    if not hasattr(transport, "_tls_ctx"):
        raise RuntimeError(f"ca_file: this SDK's transport ({type(transport).__name__}) has no TLS context to set")
    options = TlsContextOptions()
    options.override_default_trust_store_from_path(ca_filepath=ca_file)
    transport._tls_ctx = ClientTlsContext(options)


class _SdkConnection:
    """AWS's duplex event stream, driven like a websockets connection (send, recv with a timeout, close)."""

    def __init__(self, loop, client, duplex, output, request_part: Callable[[bytes, str], object],
                 response_part: type):
        import asyncio
        import queue

        self.loop, self.client, self.duplex, self.output = loop, client, duplex, output
        self.request_part, self.response_part = request_part, response_part
        self.inbox: "queue.Queue[Optional[Union[str, bytes]]]" = queue.Queue()
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.closed = False
        # one reader that never times out: cancelling a pending receive() breaks the HTTP/2 stream
        self.reader = asyncio.run_coroutine_threadsafe(self._read(), loop)

    async def _read(self) -> None:
        pending = b""
        try:
            while True:
                event = await self.output.receive()  # raises the stream's modeled errors (ModelStreamError...)
                if event is None:
                    return
                if not isinstance(event, self.response_part):  # a kind of event this SDK does not know
                    self.close_reason = f"{type(event).__name__} {getattr(event, 'tag', '')}".strip()
                    return
                part = event.value
                pending += part.bytes_ or b""
                if part.completion_state == "PARTIAL":  # a message cut in parts: whole once COMPLETE
                    continue
                self.inbox.put(pending if part.data_type == "BINARY" else pending.decode())
                pending = b""
        except Exception as e:  # noqa: BLE001 - the stream's failure is this session's end, with its reason
            said = [getattr(e, "error_code", None), getattr(e, "message", None) or str(e)]
            self.close_reason = " ".join([type(e).__name__] + [str(x) for x in said if x])
        finally:
            self.inbox.put(None)

    def _call(self, coroutine, timeout: Optional[float] = None):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def send(self, message: Union[str, bytes]) -> None:
        from websockets.exceptions import ConnectionClosed

        if self.closed or self.reader.done():
            raise ConnectionClosed(None, None)
        text = isinstance(message, str)
        data = message.encode() if text else bytes(message)
        self._call(self.duplex.input_stream.send(self.request_part(data, "UTF8" if text else "BINARY")))

    def recv(self, timeout: Optional[float] = None) -> Union[str, bytes]:
        import queue

        from websockets.exceptions import ConnectionClosed

        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if message is None:
            self.inbox.put(None)  # every later recv sees the end too
            raise ConnectionClosed(None, None)
        return message

    def close(self) -> None:
        """Our end of the stream (the SDK's empty signed event); the router then ends its side."""
        if not self.closed:
            self.closed = True
            try:
                self._call(self.duplex.input_stream.close(), HANDSHAKE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - closing a stream that already failed
                pass

    def release(self) -> None:
        """After ``close``: the response's end awaited a while (then given up), the client and its connection closed."""
        import concurrent.futures

        self.close()
        try:
            self.reader.result(HANDSHAKE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self.reader.cancel()
        try:
            self._call(self.client.close(), HANDSHAKE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a connection already gone
            pass
