"""A stand-in for SageMaker's runtime router: InvokeEndpointWithBidirectionalStream on 127.0.0.1.

Runs in .venv-sdk (Python 3.12, ``make sdk-env``), beside AWS's SDK whose requests it answers. It serves
HTTP/2 over TLS (ALPN h2 only, as AWS's endpoint on port 8443; the SDK's CRT transport streams both ways only
on HTTP/2) with a throwaway certificate from a throwaway CA (``trustme``), and for each
``POST /endpoints/{name}/invocations-bidirectional-stream``:

- checks what SageMaker would refuse: the method and path, ``Content-Type: application/vnd.amazon.eventstream``,
  a SigV4 ``Authorization`` for ``sagemaker`` in the router's region covering ``host`` and every ``x-amz*``
  header, ``X-Amz-Date``, ``X-Amz-Content-SHA256: STREAMING-AWS4-HMAC-SHA256-EVENTS``, and that every event
  is a signed envelope (``:date``, ``:chunk-signature``) around a ``PayloadPart``. The signatures themselves
  are not verified (no IAM here). A request that fails gets a 400 or 403 and no stream;
- opens a WebSocket to the container, as SageMaker does, at ``/invocations-bidirectional-stream`` or at the
  caller's ``X-Amzn-SageMaker-Model-Invocation-Path``, with ``X-Amzn-SageMaker-Model-Query-String``;
- hands each PayloadPart to the container as a frame (DataType BINARY: binary, UTF8: text) and each frame
  back as a PayloadPart of the same DataType, until the caller ends its stream (the empty signed event) or
  the container closes.

What it cannot stand in for: IAM and the signatures' check, SageMaker's timeouts, pings and limits, how it
reports a container's close code, and its errors' exact shapes.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Optional

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config
from smithy_aws_event_stream.events import Event, EventMessage
from smithy_core.aio.types import AsyncBytesReader
from websockets.asyncio.client import connect

PATH = re.compile(r"/endpoints/([^/]+)/invocations-bidirectional-stream")
SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}")
EVENT_STREAM = "application/vnd.amazon.eventstream"
SIGNED_EVENTS = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
DEFAULT_PATH = "invocations-bidirectional-stream"


@dataclass
class Invocation:
    """What one request carried and what went each way (kept for the test to read)."""

    endpoint: str
    headers: dict
    container_url: str = ""
    to_container: list = field(default_factory=list)
    """DataType of each PayloadPart handed to the container, in order."""
    to_caller: list = field(default_factory=list)
    """DataType of each frame handed back, in order."""
    signed_events: int = 0
    ended_by: str = ""
    """Who ended the stream: the caller (its empty signed event), the container (it closed), or an error."""


def _tolerating_the_tls_close_race(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Every unhandled error is reported (the test fails on it) except hypercorn's known TLS close race.

    When hypercorn closes a finished connection, the SDK's last HTTP/2 frames can cross its close_notify, and
    asyncio's TLS shutdown raises APPLICATION_DATA_AFTER_CLOSE_NOTIFY (pgjones/hypercorn#261, #291): the
    stand-in router's race, after the stream has ended, nothing SageMaker's router or the container does.
    """
    error = context.get("exception")
    if isinstance(error, ssl.SSLError) and "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in str(error):
        return
    loop.default_exception_handler(context)


class Router:
    def __init__(self, container: str, workdir: Path, region: str = "us-east-1"):
        """``container``: the container's address (ws://127.0.0.1:port); ``workdir``: where the certificate goes."""
        self.container, self.region = container.rstrip("/"), region
        ca = trustme.CA()
        self.ca_file = str(workdir / "router-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self._cert_file = str(workdir / "router-cert.pem")
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(self._cert_file)
        self.invocations: list[Invocation] = []
        self.refusals: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._socket.getsockname()[1]}"
        self._stopped: Optional[asyncio.Event] = None
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_tolerating_the_tls_close_race)
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    def __enter__(self) -> "Router":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        config = Config()
        config.bind = [f"fd://{self._socket.fileno()}"]
        config.certfile = config.keyfile = self._cert_file
        config.alpn_protocols = ["h2"]
        config.accesslog = config.errorlog = None
        self._stopped = asyncio.Event()
        await serve(self._app, config, shutdown_trigger=self._stopped.wait)

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, kind, message = refusal
            self.refusals.append(f"{status} {kind}: {message}")
            await _reply(send, status, kind, message)
            return
        call = Invocation(PATH.fullmatch(scope["path"]).group(1), headers)
        self.invocations.append(call)
        await self._relay(call, receive, send)

    def _refusal(self, scope, headers: dict) -> Optional[tuple[int, str, str]]:
        if scope["http_version"] != "2":
            return 400, "ValidationError", f"HTTP/{scope['http_version']}: this API is HTTP/2 only"
        if scope["method"] != "POST" or not PATH.fullmatch(scope["path"]):
            return 400, "ValidationError", f"no such operation: {scope['method']} {scope['path']}"
        if headers.get("content-type") != EVENT_STREAM:
            return 400, "ValidationError", f"Content-Type {headers.get('content-type')!r}, not {EVENT_STREAM}"
        signed = SIGV4.fullmatch(headers.get("authorization", ""))
        if signed is None or "x-amz-date" not in headers:
            return 403, "MissingAuthenticationTokenException", "the request is not signed with SigV4"
        region, service, signed_headers = signed.groups()
        if (region, service) != (self.region, "sagemaker"):
            return 403, "InvalidSignatureException", f"signed for {service} in {region}, not for sagemaker here"
        unsigned = {"host", *(h for h in headers if h.startswith("x-amz"))} - set(signed_headers.split(";"))
        if unsigned:
            return 403, "InvalidSignatureException", f"headers not signed: {sorted(unsigned)}"
        if headers.get("x-amz-content-sha256") != SIGNED_EVENTS:  # each event signed, chained to this request
            return 400, "ValidationError", f"x-amz-content-sha256 {headers.get('x-amz-content-sha256')!r}"
        return None

    async def _relay(self, call: Invocation, receive, send) -> None:
        path = call.headers.get("x-amzn-sagemaker-model-invocation-path", DEFAULT_PATH).lstrip("/")
        query = call.headers.get("x-amzn-sagemaker-model-query-string")
        call.container_url = f"{self.container}/{path}" + (f"?{query}" if query else "")
        async with connect(call.container_url, max_size=None, compression=None) as ws:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", EVENT_STREAM.encode()),
                                    (b"x-amzn-invoked-production-variant", b"AllTraffic")]})
            caller = asyncio.create_task(self._from_caller(call, receive, ws))
            async for frame in ws:  # until the container closes, or we close it when the caller is done
                kind = "BINARY" if isinstance(frame, bytes) else "UTF8"
                call.to_caller.append(kind)
                data = frame if isinstance(frame, bytes) else frame.encode()
                await send({"type": "http.response.body", "body": _payload_part(data, kind), "more_body": True})
            call.ended_by = call.ended_by or "container"
            caller.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _from_caller(self, call: Invocation, receive, ws) -> None:
        source = AsyncBytesReader(_body(receive))
        try:
            while (envelope := await Event.decode_async(source)) is not None:
                outer = envelope.message
                if not {":date", ":chunk-signature"} <= outer.headers.keys():
                    raise ValueError(f"an event without its signature: {sorted(outer.headers)}")
                call.signed_events += 1
                if call.ended_by:
                    raise ValueError("an event after the end of the stream")
                if not outer.payload:  # the empty signed event: the caller's end; its END_STREAM follows
                    call.ended_by = "caller"
                    continue
                inner = Event.decode(io.BytesIO(outer.payload)).message
                if inner.headers.get(":event-type") != "PayloadPart":
                    raise ValueError(f"not a PayloadPart: {inner.headers}")
                kind = inner.headers.get("DataType", "BINARY")
                call.to_container.append(kind)
                await ws.send(inner.payload if kind == "BINARY" else inner.payload.decode())
        except Exception as e:  # noqa: BLE001 - a malformed stream ends the session, and the test sees why
            call.ended_by = f"{type(e).__name__}: {e}"
        await ws.close()


async def _body(receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _payload_part(data: bytes, kind: str) -> bytes:
    return EventMessage(headers={":message-type": "event", ":event-type": "PayloadPart",
                                 ":content-type": "application/octet-stream", "DataType": kind,
                                 "CompletionState": "COMPLETE"}, payload=data).encode()


async def _reply(send, status: int, kind: str, message: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-amzn-errortype", kind.encode())]})
    await send({"type": "http.response.body", "body": json.dumps({"message": message}).encode()})
