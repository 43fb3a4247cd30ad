"""Shared fixtures for the localmodes tests (no tests of its own).

The batch and async tests run against the real server (``real``: the
session's ctranslate2 server on the embedded tiny.en), except where they
inject what the real server cannot do on cue: ``StandIn`` is a tiny container
speaking the SageMaker contract that answers 503 or 500 when told, reports a
chosen MaxConcurrentTransforms or no /execution-parameters at all, and holds
each request for a set time while counting how many are in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from typing import Iterator

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from tests import speech

real = pytest.mark.parametrize("server", ["ctranslate2"], indirect=True)
"""The real server of the session (tests/server_harness.py), shared with the other server tests."""

CORRUPT = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8
"""A WAV header, then garbage: the real server answers 415, as for any audio ffmpeg cannot decode."""


AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


class StandIn:
    """A stand-in container: ``/ping``, ``/execution-parameters``, ``/invocations``.

    The body decides the answer: one containing ``corrupt`` gets 415 (as the
    real server answers audio ffmpeg cannot decode); ``flaky`` gets 503 for
    its first ``flaky_failures`` attempts; ``crash`` always gets 500. Anything
    else gets 200 with a text naming the body's size, content type and Accept.
    Each request takes ``delay`` seconds, so concurrency can be observed.
    """

    def __init__(self, max_concurrent_transforms: int = 2, delay: float = 0.1, flaky_failures: int = 2,
                 execution_parameters: bool = True):
        self.max_concurrent_transforms = max_concurrent_transforms
        self.delay = delay
        self.flaky_failures = flaky_failures
        self.execution_parameters = execution_parameters
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: Counter = Counter()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.app = self._build()

    def _build(self) -> Flask:
        app = Flask("stand-in")

        @app.get("/ping")
        def ping():
            return "", 200

        @app.get("/execution-parameters")
        def execution_parameters():
            if not self.execution_parameters:
                return "", 404
            return {"MaxConcurrentTransforms": self.max_concurrent_transforms, "BatchStrategy": "SINGLE_RECORD",
                    "MaxPayloadInMB": 100}

        @app.post("/invocations")
        def invocations():
            body = request.get_data()
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.attempts[body] += 1
                attempt = self.attempts[body]
                self.requests.append({"content_type": request.content_type, "accept": request.headers.get("Accept"),
                                      "custom": request.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
                                      "size": len(body)})
            try:
                time.sleep(self.delay)
                if b"corrupt" in body:
                    return self._error(415, "UnsupportedMediaType", "ffmpeg could not decode the body")
                if b"crash" in body:
                    return self._error(500, "InternalError", "boom")
                if b"flaky" in body and attempt <= self.flaky_failures:
                    return self._error(503, "ModelNotReady", "try again")
                text = f"{len(body)} bytes of {request.content_type} as {request.headers.get('Accept')}"
                return Response(text, 200, content_type="text/plain; charset=utf-8")
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    @staticmethod
    def _error(status: int, kind: str, message: str) -> Response:
        return Response(json.dumps({"error": {"type": kind, "message": message}}), status,
                        content_type="application/json")

    def running(self):
        """Serve on a free 127.0.0.1 port for the block; yields the URL."""
        return serving(self.app)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Any WSGI app on a free 127.0.0.1 port, in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def clip_in(fmt: str, index: int) -> speech.Clip:
    """Sentence ``index`` spoken in one of several voices, as a ``fmt`` file."""
    return speech.speak(speech.SENTENCES[index], speech.VOICES[index % len(speech.VOICES)], fmt)


def assert_heard(clip: speech.Clip, text: str) -> None:
    """``text`` is the transcript of ``clip``: nearer its sentence than any other test sentence. (tiny.en
    mishears some voices badly, so one sentence's word error rate cannot say whose answer it is.)"""
    assert speech.nearest(text, list(speech.SENTENCES)) == clip.text, (clip.text, text)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES and k != "AWS_PROFILE"}
    env.update(extra)
    return env
