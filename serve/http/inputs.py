"""An /invocations request -> an audio file on disk + validated TranscribeOptions.

Three body kinds, chosen by Content-Type because they are structural:

- ``application/json`` (also JSON Lines, for batch transform): ``{"audio":
  "<base64>"}`` or ``{"s3_uri": "s3://bucket/key"}``, parameters at the top
  level or under ``"parameters"``. A key given twice is refused, as in the
  custom attributes header (the parser would silently keep the last one).
- ``multipart/form-data``: a file field (``file``, ``audio``, or the only one)
  plus parameter fields.
- anything else (audio/*, video/*, application/octet-stream, audio/x-audio,
  none): the body is the audio. The label is not trusted: ffmpeg sniffs the
  bytes and a body it cannot decode is a 415 with ffmpeg's reason.

Bodies are streamed to a per-request scratch directory, never held whole in
memory. Raw and multipart bodies have no cap unless the operator sets one
(WHISPER_MAX_BODY_MB). JSON bodies are capped (WHISPER_MAX_JSON_MB, 128 MB:
above batch transform's 100 MB records), refused from their Content-Length
before a byte is read; under the cap the body is spooled to disk and parsed
as a stream (ijson), the base64 audio string decoded to disk in slices as
soon as the parser hands it over, so the document is never held whole. The
scratch directory, with everything a request wrote (multipart spools
included), is removed when the request ends, whatever the outcome.

``s3_uri`` reads only under the S3 prefixes of WHISPER_S3_ALLOW, matched at
whole path segments (``s3://b/pre`` allows ``pre/x``, not ``prefix2/x``):
the container's role must not become a way to read whatever it can reach.
Anything else is refused before S3 is asked, so the answer is the same
whether or not the object exists.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Optional

import ijson
from flask import Request

from ..core.options import TranscribeOptions, as_bool, parse_custom_attributes, parse_options
from ..errors import InvalidRequestError, PayloadTooLargeError, UpstreamError
from ..settings import S3_BUCKET, Settings

CHUNK_BYTES = 1 << 20
BASE64_SLICE = 4 << 20  # characters decoded at once
MAX_JSON_DEPTH = 64  # a request is a flat object with one small "parameters" object
URL_SAFE = str.maketrans("-_", "+/")  # base64's URL-safe alphabet -> the standard one (which has neither)
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines")
FILE_FIELDS = ("file", "audio")
AUDIO_KEYS = ("audio", "inputs")  # "inputs": the Hugging Face inference-toolkit name
SCRATCH_ENVIRON_KEY = "whisper.scratch_dir"
RESPONSE_PARAMETERS = {"stream": lambda v: as_bool("stream", v)}
"""Parameters that shape the response rather than the transcription."""


@dataclass(frozen=True)
class Limits:
    """What a request may send, and which S3 objects it may name (from the settings)."""

    max_body_bytes: Optional[int] = None
    """WHISPER_MAX_BODY_MB: any body, and an S3 object; None: no cap."""
    max_json_bytes: Optional[int] = None
    """WHISPER_MAX_JSON_MB: a JSON body; None: no cap."""
    s3_allow: tuple[str, ...] = ()
    """WHISPER_S3_ALLOW: ``s3://bucket/prefix`` entries (``s3://bucket/`` for a whole bucket); none: no s3_uri."""

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(int(settings.max_body_mb * 1e6) or None, int(settings.max_json_mb * 1e6), settings.s3_allow)


@dataclass(frozen=True)
class Invocation:
    path: Path
    """The audio file, inside the request's scratch directory."""
    options: TranscribeOptions
    kind: str
    """raw | json-base64 | json-s3 | multipart (for the log)."""
    body_bytes: int
    stream: bool = False
    """Send segments as they are decoded (``stream=true``)."""


class ScratchDir:
    """A private directory for one request's files, removed on ``close`` (or on exit) whatever happened."""

    def __init__(self, parent: Path):
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="req-", dir=parent))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScratchRequest(Request):
    """Flask request whose multipart file parts spool into the request's scratch directory.

    werkzeug's default spools big parts to anonymous files in the system temp
    directory; ours go where WHISPER_TMP_DIR says and are removed with the rest.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None) -> IO[bytes]:
        scratch = self.environ.get(SCRATCH_ENVIRON_KEY)
        if scratch is None:  # form parsed outside /invocations: werkzeug's default behaviour
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return tempfile.NamedTemporaryFile(mode="w+b", dir=scratch, prefix="part-", delete=False)


def read_invocation(request: Request, scratch: Path, limits: Limits = Limits()) -> Invocation:
    """Turn the request into an audio file under ``scratch`` plus its options. Raises WhisperServeError."""
    header_options, header_extra = parse_options(
        parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES)), source=CUSTOM_ATTRIBUTES,
        extra=RESPONSE_PARAMETERS)
    max_body = limits.max_body_bytes
    if max_body and request.content_length and request.content_length > max_body:
        raise _too_large(request.content_length, max_body)
    mimetype = request.mimetype
    if mimetype in JSON_TYPES:
        invocation = _from_json(request, scratch, limits)
    elif mimetype == "multipart/form-data":
        invocation = _from_multipart(request, scratch)
    else:
        path = scratch / "body"
        size = _stream_to_file(request.stream, path, max_body, request.content_length)
        invocation = Invocation(path, TranscribeOptions(), "raw", size)
    if invocation.body_bytes == 0:
        raise InvalidRequestError("the audio is empty (0 bytes)")
    return Invocation(invocation.path, invocation.options.merged_over(header_options), invocation.kind,
                      invocation.body_bytes, invocation.stream or header_extra.get("stream", False))


def _too_large(size: int, cap: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the body is {size / 1e6:.1f} MB; this endpoint accepts at most "
                                f"{cap / 1e6:.1f} MB (WHISPER_MAX_BODY_MB)")


def _too_large_json(size: int, cap: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the JSON body is {size / 1e6:.1f} MB; JSON bodies may be at most {cap / 1e6:.1f} MB "
                                "(WHISPER_MAX_JSON_MB): send the audio as the raw body (its bytes, with an audio "
                                "Content-Type or none), or name it with an s3_uri")


def _stream_to_file(stream: BinaryIO, path: Path, max_bytes: Optional[int],
                    expected: Optional[int] = None,
                    too_large: Callable[[int, int], PayloadTooLargeError] = _too_large) -> int:
    """Copy the body to ``path``; a body shorter than its Content-Length (a cut upload) is refused."""
    size = 0
    with open(path, "wb") as out:
        while chunk := _read(stream):
            size += len(chunk)
            if max_bytes and size > max_bytes:
                raise too_large(size, max_bytes)
            out.write(chunk)
    if expected is not None and size < expected:
        raise _incomplete(f"the body ended after {size} of the {expected} bytes its Content-Length announced")
    return size


def _read(stream: BinaryIO) -> bytes:
    """One chunk of the body; a connection that breaks mid-body is the client's incomplete upload."""
    try:
        return stream.read(CHUNK_BYTES)
    except (OSError, ValueError) as exc:
        raise _incomplete(f"the body could not be read to its end ({exc})") from None
    except Exception as exc:  # gunicorn's own parser errors (bad chunk size, no more data...)
        if type(exc).__module__.startswith(("gunicorn", "werkzeug")):
            raise _incomplete(f"the body is malformed or incomplete ({type(exc).__name__}: {exc})") from None
        raise


def _incomplete(message: str) -> InvalidRequestError:
    return InvalidRequestError(message + "; the upload was not transcribed")


# --- JSON --------------------------------------------------------------------------------------


def _from_json(request: Request, scratch: Path, limits: Limits) -> Invocation:
    caps = [c for c in (limits.max_body_bytes, limits.max_json_bytes) if c]
    cap = min(caps) if caps else None
    refuse = _too_large if cap == limits.max_body_bytes else _too_large_json
    if cap and request.content_length and request.content_length > cap:
        raise refuse(request.content_length, cap)  # before reading a byte
    body_path, path = scratch / "body.json", scratch / "audio"
    _stream_to_file(request.stream, body_path, cap, request.content_length, refuse)
    try:
        document, audio_bytes = _load_json(body_path, path)
    finally:
        body_path.unlink(missing_ok=True)

    audio_keys = [k for k in AUDIO_KEYS if k in document]
    has_s3 = "s3_uri" in document
    if len(audio_keys) + has_s3 != 1:
        raise InvalidRequestError('the JSON body needs exactly one of "audio" (base64 audio) or '
                                  '"s3_uri" ("s3://bucket/key")')
    options, extra = _json_options(document, exclude={*AUDIO_KEYS, "s3_uri", "parameters"})
    stream = extra.get("stream", False)
    if has_s3:
        size = download_s3(document["s3_uri"], path, limits)
        return Invocation(path, options, "json-s3", size, stream)
    if audio_bytes is None:
        raise InvalidRequestError(f'"{audio_keys[0]}" must be a base64 string, '
                                  f'got {type(document[audio_keys[0]]).__name__}')
    return Invocation(path, options, "json-base64", audio_bytes, stream)


def _load_json(body: Path, audio: Path) -> tuple[dict, Optional[int]]:
    """The JSON object in ``body``, parsed as a stream; a top-level base64 audio string is decoded to ``audio``
    as the parser hands it over, and its decoded size returned (None without one).

    Built here from the parser's events, not by ``ijson.items``: a key given twice is refused (a dict would
    silently keep the last one), and the depth is bounded without recursion.
    """
    open_values: list = []  # the objects and arrays being built, outermost first
    keys: list[Optional[str]] = []  # each open object's current key
    audio_bytes: Optional[int] = None
    root: Any = None
    try:
        with open(body, "rb") as f:
            for event, value in ijson.basic_parse(f, use_float=True, buf_size=CHUNK_BYTES):
                if event == "map_key":
                    if value in open_values[-1]:
                        raise InvalidRequestError(f"the JSON body gives {value!r} more than once; give each key once")
                    keys[-1] = value
                    continue
                if event in ("start_map", "start_array"):
                    if len(open_values) >= MAX_JSON_DEPTH:
                        raise InvalidRequestError("the JSON body is nested too deeply to be a request")
                    open_values.append({} if event == "start_map" else [])
                    keys.append(None)
                    continue
                if event in ("end_map", "end_array"):
                    keys.pop()
                    value = open_values.pop()
                elif event == "string" and len(open_values) == 1 and keys[0] in AUDIO_KEYS:
                    audio_bytes = _write_base64(value, audio)
                    value = "<decoded>"  # the only copy of the string goes now
                if not open_values:
                    root = value
                elif keys[-1] is None:
                    open_values[-1].append(value)
                else:
                    open_values[-1][keys[-1]] = value
    except ijson.JSONError as exc:  # bad JSON or UTF-8, trailing data, a number out of range
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidRequestError(f"the body is not valid JSON: {reason.splitlines()[0].strip()}") from None
    if not isinstance(root, dict):
        raise InvalidRequestError(f"the JSON body must be an object, got {type(root).__name__}")
    return root, audio_bytes


def _json_options(document: dict, exclude: set[str]) -> tuple[TranscribeOptions, dict]:
    nested = document.get("parameters", {})
    if not isinstance(nested, dict):
        raise InvalidRequestError('"parameters" must be a JSON object')
    top = {k: v for k, v in document.items() if k not in exclude}
    overlap = set(top) & set(nested)
    if overlap:
        raise InvalidRequestError(f"parameter(s) {', '.join(sorted(overlap))} given both at the top level and "
                                  'in "parameters"; give each once')
    return parse_options({**top, **nested}, source="the JSON body", extra=RESPONSE_PARAMETERS)


def _write_base64(encoded: str, path: Path) -> int:
    """Decode base64 (or a ``data:...;base64,`` URI) to ``path``, slice by slice, never copying it whole:
    line breaks (MIME) and the URL-safe alphabet are handled within each slice."""
    start = 0
    if encoded.startswith("data:"):
        comma = encoded.find(",", 0, 1024)
        if comma < 0 or not encoded[:comma].endswith(";base64"):
            raise InvalidRequestError('a data: URI in "audio" must be base64 ("data:audio/wav;base64,...")')
        start = comma + 1
    size, carry = 0, ""
    try:
        with open(path, "wb") as out:
            for i in range(start, len(encoded), BASE64_SLICE):
                piece = carry + "".join(encoded[i:i + BASE64_SLICE].split()).translate(URL_SAFE)
                whole = len(piece) - len(piece) % 4  # base64 decodes 4 characters at a time
                piece, carry = piece[:whole], piece[whole:]
                data = base64.b64decode(piece, validate=True)
                size += len(data)
                out.write(data)
            if carry:
                base64.b64decode(carry, validate=True)  # raises: a length that is not a multiple of 4
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f'"audio" is not valid base64: {exc}') from None
    return size


# --- S3 ----------------------------------------------------------------------------------------

_s3_client = None
_s3_lock = threading.Lock()


def _s3():
    """One boto3 client per worker (clients are thread-safe); credentials from the instance role."""
    global _s3_client
    with _s3_lock:
        if _s3_client is None:
            import boto3

            _s3_client = boto3.client("s3")
        return _s3_client


def parse_s3_uri(uri: Any) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key), the key taken literally (``?`` and ``#`` are part of it)."""
    if not isinstance(uri, str):
        raise InvalidRequestError(f'"s3_uri" must be a string, got {type(uri).__name__}')
    bucket, _, key = uri[len("s3://"):].partition("/") if uri.startswith("s3://") else ("", "", "")
    if not S3_BUCKET.match(bucket) or not key or key.endswith("/"):
        raise InvalidRequestError(f'"s3_uri" must look like s3://bucket/key, got {uri!r}')
    if any(segment in (".", "..") for segment in key.split("/")):  # a layer that normalises paths would move it
        raise InvalidRequestError(f'"s3_uri" must not contain "." or ".." path segments, got {uri!r}')
    return bucket, key


def s3_allowed(allow: tuple[str, ...], bucket: str, key: str) -> bool:
    """Whether an entry of WHISPER_S3_ALLOW covers the object: same bucket, and its prefix is the key or a
    run of the key's whole segments (``s3://b/pre`` covers ``pre`` and ``pre/x``, never ``prefix2/x``)."""
    for entry in allow:
        allowed_bucket, _, prefix = entry[len("s3://"):].partition("/")
        if allowed_bucket == bucket and (not prefix or key == prefix or key.startswith(prefix + "/")):
            return True
    return False


def download_s3(uri: Any, path: Path, limits: Limits) -> int:
    """Download the object to ``path``, if WHISPER_S3_ALLOW covers it. A missing or forbidden object is the
    caller's 400; S3 out of reach, a 502. Outside the allowlist S3 is never asked: the refusal is the same
    whether or not the object exists, and says nothing of its size."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(uri)
    if not limits.s3_allow:
        raise InvalidRequestError("this server reads no s3_uri: WHISPER_S3_ALLOW names no S3 prefix. Send the "
                                  "audio in the body, or have the operator allow a prefix "
                                  "(WHISPER_S3_ALLOW=s3://bucket/prefix)")
    if not s3_allowed(limits.s3_allow, bucket, key):
        raise InvalidRequestError(f"{uri} is outside WHISPER_S3_ALLOW, the S3 prefixes this server may read; "
                                  "nothing was read")
    max_bytes = limits.max_body_bytes
    client = _s3()
    try:
        if max_bytes:
            size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size > max_bytes:
                raise _too_large(size, max_bytes)
        with open(path, "wb") as out:
            client.download_fileobj(bucket, key, out)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        message = err.get("Message") or {"404": "Not Found", "403": "Forbidden"}.get(str(code), "")
        raise InvalidRequestError(f"could not read {uri}: {code} {message}".strip()) from None
    except BotoCoreError as exc:  # no connection, timeouts, no credentials: nothing the request can fix
        raise UpstreamError(f"S3 could not be reached to read {uri}: {exc}") from None
    return path.stat().st_size


# --- multipart ---------------------------------------------------------------------------------


def _from_multipart(request: Request, scratch: Path) -> Invocation:
    path = save_file_field(request, scratch)
    fields = request.form
    repeated = sorted({k for k in fields if len(fields.getlist(k)) > 1})
    if repeated:
        raise InvalidRequestError(f"form field(s) {', '.join(repeated)} given more than once; give each once")
    options, extra = parse_options({k: fields[k] for k in fields}, source="the form fields",
                                   extra=RESPONSE_PARAMETERS)
    return Invocation(path, options, "multipart", path.stat().st_size, extra.get("stream", False))


def save_file_field(request: Request, scratch: Path) -> Path:
    """The multipart body's audio (field ``file``, ``audio``, or its only file) as ``scratch/audio``."""
    request.environ[SCRATCH_ENVIRON_KEY] = str(scratch)
    files = request.files
    if not files:
        raise InvalidRequestError("the multipart body has no file field; send the audio as a file field "
                                  "named 'file'")
    name = next((f for f in FILE_FIELDS if f in files), None)
    if name is None:
        if len(files) > 1:
            raise InvalidRequestError(f"the multipart body has several file fields ({', '.join(files)}); "
                                      "name the audio field 'file'")
        name = next(iter(files))
    upload = files[name]
    path = scratch / "audio"
    spooled = getattr(upload.stream, "name", None)
    if isinstance(spooled, str) and Path(spooled).parent == scratch:
        upload.stream.close()
        Path(spooled).rename(path)  # already on disk in our scratch dir: no copy
    else:
        upload.save(path)
    return path
