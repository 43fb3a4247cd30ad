"""Hostile inputs against the real server (nginx, gunicorn, the app): every one gets a precise JSON answer.

Each row sends one input and checks the answer: its status, and a JSON body
whose message names the problem. After every row (the ``unharmed`` fixture)
/ping answers 200 within 2 s, the worker is the same process, and the request
left no file in WHISPER_TMP_DIR.

Who answers what:

| who      | inputs                                                        | answer                                    |
|----------|---------------------------------------------------------------|-------------------------------------------|
| nginx    | broken HTTP: request line, headers, framing, versions         | 400 405 414 501 505, JSON from nginx.conf |
| gunicorn | request lines nginx lets through but gunicorn refuses         | 400 JSON (gunicorn_conf.py's write_error) |
| the app  | bodies and parameters                                         | 400 406 413 415 502 JSON                  |
| ffmpeg   | cut or corrupt audio                                          | 200, what was decoded, ``warnings``       |
| the VAD  | ten minutes of silence, or of white noise                     | 200, no text                              |

Truncated, abandoned and stalled uploads (a client that shuts its side or
resets mid-body, or goes silent for WHISPER_CLIENT_TIMEOUT_S): nginx closes the
connection without an answer. A client that has shut its side cannot read
one, and nginx never sends the 408 it logs for a timed-out client. What is
asserted instead: no answer, nothing reached the app (no invocation logged),
nothing left on disk, and the rest of the invariants.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import pytest
import requests

from tests import speech
from tests.server_harness import ServerHandle, free_port, running_server

CLIENT_TIMEOUT_S = 2
MAX_AUDIO_S = 900
PING_BUDGET_S = 2.0
ATTRS = "X-Amzn-SageMaker-Custom-Attributes"
TEXT = " ".join(speech.SENTENCES[:3])


@pytest.fixture(scope="module")
def hostile() -> Iterator[ServerHandle]:
    """A server of its own: a short client timeout, a 15-minute audio limit, and S3 out of reach."""
    dead_s3 = free_port()  # nothing listens there
    env = {"WHISPER_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S), "WHISPER_MAX_AUDIO_SECONDS": str(MAX_AUDIO_S),
           "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{dead_s3}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
           "AWS_RETRY_MODE": "standard", "AWS_EC2_METADATA_DISABLED": "true",
           "WHISPER_S3_ALLOW": "s3://bucket"}
    with running_server("ctranslate2", env=env) as handle:
        yield handle


@pytest.fixture
def unharmed(hostile: ServerHandle) -> Iterator[ServerHandle]:
    """Same worker before and after, /ping 200 within 2 s afterwards, and the scratch folder empty."""
    before = hostile.workers()
    assert before
    yield hostile
    start = time.monotonic()
    r = requests.get(hostile.url + "/ping", timeout=PING_BUDGET_S)
    assert r.status_code == 200 and time.monotonic() - start < PING_BUDGET_S
    assert hostile.workers() == before, "a worker died and was replaced"
    assert scratch_empty(hostile), hostile.request_files()


def scratch_empty(server: ServerHandle, within_s: float = 10.0) -> bool:
    """No request file left (nginx and the app remove theirs as a request ends: give them a moment)."""
    deadline = time.monotonic() + within_s
    while server.request_files():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def invocations(server: ServerHandle) -> list[dict]:
    """The app's invocation log lines so far."""
    return [json.loads(ln) for ln in server.log().splitlines()
            if ln.startswith("{") and '"event": "invocation"' in ln]


# --- a raw HTTP client: send exact bytes, read what comes back -----------------------------------


@dataclass
class Reply:
    status: Optional[int]
    """None: no status line (nginx answered an HTTP/0.9 request, which has none)."""
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(server: ServerHandle, data: bytes, shut: bool = False, timeout: float = 60.0) -> Optional[Reply]:
    """Send ``data`` on a fresh connection (then half-close it if ``shut``); the reply, or None if none came."""
    with connect(server, timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return read_reply(sock)


def connect(server: ServerHandle, timeout: float = 60.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=timeout)


def read_reply(sock: socket.socket) -> Optional[Reply]:
    """One answer: status line, headers, and the body by its Content-Length (or to the close)."""
    received = b""
    while not (received.startswith(b"HTTP/") and b"\r\n\r\n" in received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
        if not b"HTTP/".startswith(received[:5]):
            break  # no status line: an HTTP/0.9 answer, read to the close
    if not received:
        return None
    if not received.startswith(b"HTTP/"):
        while chunk := sock.recv(65536):
            received += chunk
        return Reply(None, {}, received)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body[:length] if length >= 0 else body)


def assert_json_error(reply: Optional[Reply], status: int, error_type: str, needle: str) -> None:
    assert reply is not None, "the server closed the connection without an answer"
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type") == "application/json", reply.headers
    error = reply.json()["error"]
    assert error["type"] == error_type, error
    assert needle.lower() in error["message"].lower(), error


# --- 1. broken HTTP: nginx (or gunicorn) answers, as JSON -------------------------------------------

H = b"Host: x\r\n"
MALFORMED = b"malformed HTTP request"
PROTOCOL = [
    # (id, bytes sent, status, error type, words of the message)
    ("request-line-10kB", b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, "URITooLong", "8 kB"),
    ("header-20kB", b"GET /ping HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n",
     400, "InvalidRequest", "malformed"),
    ("headers-40kB-in-all", b"GET /ping HTTP/1.1\r\n" + H + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 7000)
                                                                       for i in range(6)) + b"\r\n",
     400, "InvalidRequest", "malformed"),
    ("bare-CR", b"GET /ping HTTP/1.1\r" + H + b"\r\n", 400, "InvalidRequest", "malformed"),
    ("content-length-and-chunked", b"POST /invocations HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("bad-chunk-size", b"POST /invocations HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("chunk-size-overflow", b"POST /invocations HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + b"f" * 20 + b"\r\nabc\r\n0\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("two-content-lengths", b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
     400, "InvalidRequest", "malformed"),
    ("negative-content-length", b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
     400, "InvalidRequest", "malformed"),
    ("signed-content-length", b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
     400, "InvalidRequest", "malformed"),
    ("content-length-overflow", b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 23 + b"\r\n\r\n",
     400, "InvalidRequest", "malformed"),
    ("HTTP/2.0-request-line", b"GET /ping HTTP/2.0\r\n" + H + b"\r\n", 505, "HTTPVersionNotSupported", "HTTP/1.1"),
    ("TLS-handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 + b"\r\n\r\n",
     400, "InvalidRequest", "malformed"),
    ("bad-method-characters", b"G@T /ping HTTP/1.1\r\n" + H + b"\r\n", 400, "InvalidRequest", "malformed"),
    ("TRACE", b"TRACE /ping HTTP/1.1\r\n" + H + b"\r\n", 405, "MethodNotAllowed", "TRACE"),
    ("transfer-encoding-gzip", b"POST /invocations HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
     501, "NotImplemented", "Transfer-Encoding"),
    ("transfer-encoding-chunked-twice", b"POST /invocations HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501, "NotImplemented", "Transfer-Encoding"),
    ("HTTP/1.1-without-Host", b"GET /ping HTTP/1.1\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("two-Host-headers", b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("NUL-in-a-header", b"GET /ping HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("space-before-colon", b"GET /ping HTTP/1.1\r\nHost : x\r\n\r\n", 400, "InvalidRequest", "malformed"),
    ("obsolete-line-folding", b"GET /ping HTTP/1.1\r\n" + H + b"X-A: b\r\n  c\r\n\r\n", 400, "InvalidRequest",
     "malformed"),
    ("path-above-the-root", b"GET /../../etc/passwd HTTP/1.1\r\n" + H + b"\r\n", 400, "InvalidRequest", "malformed"),
    ("bad-percent-escape", b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n", 400, "InvalidRequest", "malformed"),
    ("OPTIONS-asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 400, "InvalidRequest", "malformed"),
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, "InvalidRequest", "malformed"),
    # nginx passes this on; gunicorn's parser refuses it, before any app code (it used to answer in HTML)
    ("non-ASCII-bytes-in-the-path", b"GET /\xff\xfe HTTP/1.1\r\n" + H + b"\r\n", 400, "InvalidRequest",
     "Invalid Request Line"),
]


@pytest.mark.parametrize(("data", "status", "error_type", "needle"), [row[1:] for row in PROTOCOL],
                         ids=[row[0] for row in PROTOCOL])
def test_broken_http(unharmed, data, status, error_type, needle):
    before = len(invocations(unharmed))
    assert_json_error(exchange(unharmed, data), status, error_type, needle)
    assert len(invocations(unharmed)) == before, "a request refused in front reached the app"


def test_300_headers_reach_the_app(unharmed):
    """Valid HTTP: gunicorn's default limit of 100 header fields answered 431 in HTML; now the app answers."""
    data = (b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n")
    assert_json_error(exchange(unharmed, data), 400, "InvalidRequest", "audio is empty")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping_is_not_labelled_html(unharmed, method):
    """No answer from our port is HTML: an empty 200 included (Flask labels a bare response text/html)."""
    r = requests.request(method, unharmed.url + "/ping", timeout=PING_BUDGET_S)
    assert r.status_code == 200 and r.content == b""
    assert not r.headers.get("Content-Type", "").startswith("text/html"), r.headers


def test_CRLF_in_the_path_is_HTTP_0_9_and_gets_the_apps_JSON_404(unharmed):
    """'GET /pi' then CRLF: nginx reads an HTTP/0.9 request, whose answer has no status line: the body alone."""
    reply = exchange(unharmed, b"GET /pi\r\nng HTTP/1.1\r\n" + H + b"\r\n")
    assert reply is not None and reply.status is None
    assert reply.json()["error"]["type"] == "NotFound"


# --- 2. bodies and parameters: the app answers ---------------------------------------------------


def deep(n: int) -> bytes:
    return b'{"audio": "QUJD", "parameters": ' + b'{"a": ' * n + b"1" + b"}" * (n + 1)


JSON = {"Content-Type": "application/json"}
WAV = {"Content-Type": "audio/wav"}
BODIES = [
    # (id, requests.post keyword arguments; "{wav}" stands for the speech clip), status, type, words
    ("empty-body", dict(data=b"", headers=WAV), 400, "InvalidRequest", "empty"),
    ("JSON-arrays-100000-deep", dict(data=b"[" * 100_000 + b"]" * 100_000, headers=JSON),
     400, "InvalidRequest", "nested too deeply"),
    ("JSON-objects-100000-deep", dict(data=b'{"a":' * 100_000 + b"1" + b"}" * 100_000, headers=JSON),
     400, "InvalidRequest", "nested too deeply"),
    ("JSON-parameters-100000-deep", dict(data=deep(100_000), headers=JSON), 400, "InvalidRequest", "nested too deeply"),
    ("JSON-integer-of-5000-digits", dict(data=b'{"audio": "QUJD", "beam_size": 1' + b"0" * 5000 + b"}", headers=JSON),
     400, "InvalidRequest", "not valid JSON"),
    ("JSON-truncated", dict(data=b'{"audio": "QUJD",', headers=JSON), 400, "InvalidRequest", "not valid JSON"),
    ("JSON-bad-UTF-8", dict(data=b'{"audio": "\xff\xfe"}', headers=JSON), 400, "InvalidRequest", "not valid JSON"),
    ("JSON-a-list", dict(json=[1, 2]), 400, "InvalidRequest", "must be an object"),
    ("JSON-key-twice", dict(data=b'{"audio": "QUJD", "language": "en", "language": "fr"}', headers=JSON),
     400, "InvalidRequest", "'language' more than once"),
    ("JSON-audio-a-number", dict(json={"audio": 5}), 400, "InvalidRequest", "base64 string"),
    ("JSON-audio-not-base64", dict(json={"audio": "%%%"}), 400, "InvalidRequest", "not valid base64"),
    ("JSON-audio-and-s3_uri", dict(json={"audio": "QUJD", "s3_uri": "s3://b/k"}), 400, "InvalidRequest",
     "exactly one of"),
    ("JSON-s3_uri-not-s3", dict(json={"s3_uri": "http://b/k"}), 400, "InvalidRequest", "s3://bucket/key"),
    ("JSON-s3_uri-unreachable", dict(json={"s3_uri": "s3://bucket/clip.wav"}), 502, "UpstreamUnavailable",
     "S3 could not be reached to read s3://bucket/clip.wav"),
    ("JSON-parameters-not-an-object", dict(json={"audio": "QUJD", "parameters": [1]}), 400, "InvalidRequest",
     '"parameters" must be a JSON object'),
    ("JSON-parameter-at-both-levels", dict(json={"audio": "QUJD", "beam_size": 1, "parameters": {"beam_size": 2}}),
     400, "InvalidRequest", "beam_size given both"),
    ("JSON-temperature-NaN", dict(data=b'{"audio": "QUJD", "temperature": NaN}', headers=JSON),
     400, "InvalidRequest", "not valid JSON"),  # NaN is not JSON (RFC 8259); the streaming parser says so
    ("JSON-beam_size-a-billion", dict(json={"audio": "QUJD", "beam_size": 10 ** 9}), 400, "InvalidParameter",
     "between 1 and 20"),
    ("JSON-unknown-parameter", dict(json={"audio": "QUJD", "word_timestamp": True}), 400, "InvalidParameter",
     "unknown parameter 'word_timestamp'"),
    ("attribute-key-twice", dict(data="{wav}", headers={**WAV, ATTRS: "language=en;language=en"}),
     400, "InvalidParameter", "'language' more than once"),
    ("attribute-key-twice-other-case", dict(data="{wav}", headers={**WAV, ATTRS: "beam_size=1; Beam_Size =2"}),
     400, "InvalidParameter", "'Beam_Size' more than once"),
    ("attributes-over-1024-characters", dict(data="{wav}", headers={**WAV, ATTRS: "initial_prompt=" + "x" * 2000}),
     400, "InvalidParameter", "at most 1024"),
    ("attribute-not-name=value", dict(data="{wav}", headers={**WAV, ATTRS: "language"}), 400, "InvalidParameter",
     "name=value"),
    ("attribute-empty-value", dict(data="{wav}", headers={**WAV, ATTRS: "beam_size="}), 400, "InvalidParameter",
     "beam_size must be an integer"),
    ("multipart-without-a-file", dict(files={"language": (None, "en")}), 400, "InvalidRequest", "no file field"),
    ("multipart-two-unnamed-files", dict(files={"a": ("a.wav", b"RIFF"), "b": ("b.wav", b"RIFF")}),
     400, "InvalidRequest", "several file fields"),
    ("multipart-field-twice", dict(files=[("file", ("a.wav", "{wav}")), ("language", (None, "en")),
                                          ("language", (None, "en"))]), 400, "InvalidRequest", "more than once"),
    ("multipart-cut-before-its-end", dict(data=b'--XX\r\nContent-Disposition: form-data; name="file"; '
                                               b'filename="a.wav"\r\n\r\nRIFF' + b"\x00" * 2000,
                                          headers={"Content-Type": "multipart/form-data; boundary=XX"}),
     400, "InvalidRequest", "no file field"),
    ("Accept-application/pdf", dict(data="{wav}", headers={**WAV, "Accept": "application/pdf"}), 406,
     "NotAcceptable", "application/json"),
    ("plain-text-as-audio", dict(data=b"this is plain text, not audio" * 100, headers=WAV), 415,
     "UnsupportedMediaType", "Invalid data found"),
    ("1-MB-of-random-bytes", dict(data=random.Random(9).randbytes(1 << 20), headers=WAV), 415,
     "UnsupportedMediaType", "could not decode"),
    ("WAV-header-without-samples", dict(data="{wav_header}", headers=WAV), 415, "UnsupportedMediaType", "data"),
    ("2-kB-WAV-declaring-1-Hz", dict(data="{wav_1hz}", headers=WAV), 415, "UnsupportedMediaType", "1 Hz"),
    ("video-without-audio", dict(data="{video}", headers={"Content-Type": "video/mp4"}), 415,
     "UnsupportedMediaType", "could not decode"),
    ("220-kB-FLAC-of-20-minutes", dict(data="{flac_20min}", headers={"Content-Type": "audio/flac"}), 413,
     "PayloadTooLarge", "WHISPER_MAX_AUDIO_SECONDS"),
    ("GET-invocations", dict(method="GET"), 405, "MethodNotAllowed", "not allowed"),
    ("PUT-invocations", dict(method="PUT", data=b"x"), 405, "MethodNotAllowed", "not allowed"),
    ("unknown-route", dict(path="/predict"), 404, "NotFound", "not found"),
]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    """The audio and other files the rows send."""
    tmp = tmp_path_factory.mktemp("hostile-media")
    wav = speech.speak(speech.SENTENCES[0]).path.read_bytes()
    rate_1hz = (b"RIFF" + struct.pack("<I", 36 + 2000) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)
                + b"data" + struct.pack("<I", 2000) + random.Random(1).randbytes(2000))
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-y"]
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1200", "-c:a", "flac",
                    str(tmp / "silence.flac")], check=True)
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "color=c=red:s=64x64:r=5", "-t", "2", "-c:v", "libx264",
                    str(tmp / "video.mp4")], check=True)
    return {"wav": wav, "wav_header": wav[:44], "wav_1hz": rate_1hz, "video": (tmp / "video.mp4").read_bytes(),
            "flac_20min": (tmp / "silence.flac").read_bytes()}


def _fill(value, media: dict[str, bytes]):
    """Replace the "{name}" placeholders of a row with the media's bytes."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in media:
        return media[value[1:-1]]
    if isinstance(value, tuple):
        return tuple(_fill(v, media) for v in value)
    if isinstance(value, list):
        return [_fill(v, media) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, media) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("kwargs", "status", "error_type", "needle"), [row[1:] for row in BODIES],
                         ids=[row[0] for row in BODIES])
def test_bad_bodies_and_parameters(unharmed, media, kwargs, status, error_type, needle):
    kwargs = _fill(dict(kwargs), media)
    method, path = kwargs.pop("method", "POST"), kwargs.pop("path", "/invocations")
    r = requests.request(method, unharmed.url + path, timeout=120, **kwargs)
    reply = Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
    assert_json_error(reply, status, error_type, needle)
    assert r.headers["X-Request-Id"], "the app answered: its answers carry a request id"
    if path == "/invocations" and method == "POST":
        logged = [e for e in invocations(unharmed) if e["request_id"] == r.headers["X-Request-Id"]]
        assert [(e["status"], e["error_type"]) for e in logged] == [(status, error_type)]


# --- 3. cut and corrupt audio: what was decoded, and a warning that says so ------------------------


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + random.Random(3).randbytes(4000) + data[middle + 4000:]


CUT = [
    # (format, what is done to the file: kept share or "corrupt", words one of the warnings has)
    ("wav", 0.1, "ends early"), ("wav", 0.5, "ends early"),
    ("mp3", 0.1, "ends early"), ("mp3", 0.5, "ends early"), ("mp3", "corrupt", "Header missing"),
    ("flac", 0.1, "ends early"), ("flac", 0.5, "ends early"),
    ("flac", "corrupt", "non monotonically"),  # ffmpeg's only complaint: the frames' timestamps jump
    ("ogg", 0.1, "ends early"), ("ogg", 0.5, "ends early"),  # ffmpeg says nothing; the last page tells
    ("webm", 0.5, "ends early"),
]


@pytest.mark.parametrize(("fmt", "damage", "needle"), CUT, ids=[f"{f}-{d}" for f, d, _ in CUT])
def test_cut_or_corrupt_audio_gives_what_was_decoded_and_says_so(unharmed, fmt, damage, needle):
    whole = speech.speak(TEXT, fmt=fmt).path.read_bytes()
    data = _corrupt(whole) if damage == "corrupt" else whole[:int(len(whole) * damage)]
    r = requests.post(unharmed.url + "/invocations", data=data, headers={"Content-Type": "application/octet-stream"},
                      timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    warnings = body.get("warnings") or []
    assert any(needle.lower() in w.lower() for w in warnings), warnings
    assert body["text"], "what could be decoded was speech: it has words"
    if damage != "corrupt":
        assert body["duration"] < speech.duration(speech.speak(TEXT).path) * (damage + 0.1)
    logged = [e for e in invocations(unharmed) if e["request_id"] == r.headers["X-Request-Id"]]
    assert logged and logged[0]["warnings"] == warnings


def test_whole_streamed_wav_has_no_warnings(unharmed):
    """A WAV written to a pipe declares its size unknown (0xFFFFFFFF): complete, and nothing to warn about."""
    clip = speech.speak(speech.SENTENCES[5])
    streamed = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip.path), "-f", "wav", "pipe:1"],
                              check=True, capture_output=True).stdout
    assert b"data\xff\xff\xff\xff" in streamed[:200]
    r = requests.post(unharmed.url + "/invocations", data=streamed, headers=WAV, timeout=300)
    assert r.status_code == 200 and "warnings" not in r.json(), r.text
    assert speech.wer([clip.text], [r.json()["text"]]) <= speech.MAX_CLIP_WER


@pytest.mark.parametrize("kind", ["silence", "white-noise"])
def test_ten_minutes_of_silence_or_noise_give_no_text(unharmed, tmp_path, kind):
    """Nothing made up, by default: the engine-level check (tests/core/test_scheduler.py), through the server."""
    source = "anullsrc=r=16000:cl=mono" if kind == "silence" else "anoisesrc=r=16000:color=white:amplitude=0.1"
    audio = tmp_path / "ten-minutes.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", source, "-t", "600", "-c:a", "flac",
                    str(audio)], check=True)
    r = requests.post(unharmed.url + "/invocations", data=audio.read_bytes(), headers={"Content-Type": "audio/flac"},
                      timeout=900)
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == 600 and r.json()["text"] == "" and r.json()["segments"] == []


# --- 4. truncated, abandoned, stalled and slow uploads ---------------------------------------------


def _post_head(length: Optional[int]) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Type: audio/wav\r\n" + framing + b"\r\n\r\n"


def _nothing_reached_the_app(server: ServerHandle, before: int) -> None:
    assert scratch_empty(server), server.request_files()
    time.sleep(0.5)  # the app logs a request as it ends; one that got there would be in the log by now
    assert len(invocations(server)) == before, invocations(server)[before:]


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_half_closed_incomplete_upload_is_never_transcribed(unharmed, media, how):
    """Content-Length 1,000,000, 1,000 bytes sent, then the write side shut (or a chunked body without its end)."""
    before = len(invocations(unharmed))
    if how == "content-length":
        data = _post_head(1_000_000) + media["wav"][:1000]
    else:
        data = _post_head(None) + b"3e8\r\n" + media["wav"][:1000] + b"\r\n"
    assert exchange(unharmed, data, shut=True) is None
    _nothing_reached_the_app(unharmed, before)


def test_client_that_resets_mid_upload_is_never_transcribed(unharmed, media):
    before = len(invocations(unharmed))
    sock = connect(unharmed)
    sock.sendall(_post_head(len(media["wav"])) + media["wav"][:5000])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    sock.close()
    _nothing_reached_the_app(unharmed, before)


@pytest.mark.parametrize("where", ["mid-body", "mid-chunked-body", "mid-headers"])
def test_stalled_client_is_dropped_after_the_client_timeout(unharmed, media, where):
    before = len(invocations(unharmed))
    data = {"mid-body": _post_head(len(media["wav"])) + media["wav"][:1000],
            "mid-chunked-body": _post_head(None) + b"3e8\r\n" + media["wav"][:1000] + b"\r\n",
            "mid-headers": b"POST /invocations HTTP/1.1\r\n" + H}[where]
    assert exchange(unharmed, data, timeout=CLIENT_TIMEOUT_S * 10) is None  # closed, not left hanging
    _nothing_reached_the_app(unharmed, before)


def test_client_that_half_closes_after_a_complete_body_is_not_transcribed(unharmed):
    """nginx takes a half-close for a client that left, and drops the request at gunicorn too: its work is cancelled.

    Three minutes of speech, several seconds of engine work: the app must hear that the client left long before
    it could finish (a 3 s clip was sometimes transcribed before the close reached it, a race, not a leak)."""
    body = speech.long_clip(3).path.read_bytes()
    before = len(invocations(unharmed))
    assert exchange(unharmed, _post_head(len(body)) + body, shut=True) is None
    assert scratch_empty(unharmed)
    logged = invocations(unharmed)[before:]
    # the app saw the client leave (499), or the body cut short (400); it never transcribed it
    assert all(e["status"] in (400, 499) and "audio_seconds" not in e for e in logged), logged


def test_slow_upload_that_completes_is_transcribed(unharmed):
    """A client sending its body in 40 pieces, each well within the client timeout: a normal answer."""
    clip = speech.speak(speech.SENTENCES[1])
    data = clip.path.read_bytes()
    piece = len(data) // 40 + 1
    with connect(unharmed, timeout=300) as sock:
        sock.sendall(_post_head(len(data)))
        for i in range(0, len(data), piece):
            time.sleep(CLIENT_TIMEOUT_S / 10)
            sock.sendall(data[i:i + piece])
        reply = read_reply(sock)
    assert reply is not None and reply.status == 200, reply
    assert speech.wer([clip.text], [reply.json()["text"]]) <= speech.MAX_CLIP_WER, reply.json()["text"]
