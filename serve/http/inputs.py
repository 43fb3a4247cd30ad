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
memory (JSON is the exception: the parser needs the document, so a base64
body costs about its size in memory; it is still spooled to disk first and
decoded to disk in slices). The scratch directory, with everything a request
wrote (multipart spools included), is removed when the request ends,
whatever the outcome.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Optional
from urllib.parse import urlparse

from flask import Request

from ..core.options import TranscribeOptions, as_bool, parse_custom_attributes, parse_options
from ..errors import InvalidRequestError, PayloadTooLargeError, UpstreamError

CHUNK_BYTES = 1 << 20
BASE64_SLICE = 4 << 20  # characters; a multiple of 4 so slices decode independently
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines")
FILE_FIELDS = ("file", "audio")
AUDIO_KEYS = ("audio", "inputs")  # "inputs": the Hugging Face inference-toolkit name
SCRATCH_ENVIRON_KEY = "whisper.scratch_dir"
RESPONSE_PARAMETERS = {"stream": lambda v: as_bool("stream", v)}
"""Parameters that shape the response rather than the transcription."""


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


def read_invocation(request: Request, scratch: Path, max_body_bytes: Optional[int] = None) -> Invocation:
    """Turn the request into an audio file under ``scratch`` plus its options. Raises WhisperServeError."""
    header_options, header_extra = parse_options(
        parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES)), source=CUSTOM_ATTRIBUTES,
        extra=RESPONSE_PARAMETERS)
    if max_body_bytes and request.content_length and request.content_length > max_body_bytes:
        raise _too_large(request.content_length, max_body_bytes)
    mimetype = request.mimetype
    if mimetype in JSON_TYPES:
        invocation = _from_json(request, scratch, max_body_bytes)
    elif mimetype == "multipart/form-data":
        invocation = _from_multipart(request, scratch)
    else:
        path = scratch / "body"
        size = _stream_to_file(request.stream, path, max_body_bytes, request.content_length)
        invocation = Invocation(path, TranscribeOptions(), "raw", size)
    if invocation.body_bytes == 0:
        raise InvalidRequestError("the audio is empty (0 bytes)")
    return Invocation(invocation.path, invocation.options.merged_over(header_options), invocation.kind,
                      invocation.body_bytes, invocation.stream or header_extra.get("stream", False))


def _too_large(size: int, cap: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the body is {size / 1e6:.1f} MB; this endpoint accepts at most "
                                f"{cap / 1e6:.1f} MB (WHISPER_MAX_BODY_MB)")


def _stream_to_file(stream: BinaryIO, path: Path, max_bytes: Optional[int],
                    expected: Optional[int] = None) -> int:
    """Copy the body to ``path``; a body shorter than its Content-Length (a cut upload) is refused."""
    size = 0
    with open(path, "wb") as out:
        while chunk := _read(stream):
            size += len(chunk)
            if max_bytes and size > max_bytes:
                raise _too_large(size, max_bytes)
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


def _from_json(request: Request, scratch: Path, max_body_bytes: Optional[int]) -> Invocation:
    body_path = scratch / "body.json"
    _stream_to_file(request.stream, body_path, max_body_bytes, request.content_length)
    try:
        with open(body_path, "rb") as f:
            document = json.load(f, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InvalidRequestError("the JSON body is nested too deeply to be a request") from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of more than 4300 digits
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    finally:
        body_path.unlink(missing_ok=True)
    if not isinstance(document, dict):
        raise InvalidRequestError(f"the JSON body must be an object, got {type(document).__name__}")

    audio_keys = [k for k in AUDIO_KEYS if k in document]
    has_s3 = "s3_uri" in document
    if len(audio_keys) + has_s3 != 1:
        raise InvalidRequestError('the JSON body needs exactly one of "audio" (base64 audio) or '
                                  '"s3_uri" ("s3://bucket/key")')
    options, extra = _json_options(document, exclude={*AUDIO_KEYS, "s3_uri", "parameters"})
    path = scratch / "audio"
    stream = extra.get("stream", False)
    if has_s3:
        size = download_s3(document.pop("s3_uri"), path, max_body_bytes)
        return Invocation(path, options, "json-s3", size, stream)
    encoded = document.pop(audio_keys[0])
    del document  # the decoded audio goes to disk; don't keep the document alive meanwhile
    size = _write_base64(encoded, path)
    return Invocation(path, options, "json-base64", size, stream)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all distinct: a key given twice would silently keep one value."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InvalidRequestError(f"the JSON body gives {repeated!r} more than once; give each key once")
    return document


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


def _write_base64(encoded: Any, path: Path) -> int:
    """Decode base64 (or a ``data:...;base64,`` URI) to ``path``, slice by slice."""
    if not isinstance(encoded, str):
        raise InvalidRequestError(f'"audio" must be a base64 string, got {type(encoded).__name__}')
    if encoded.startswith("data:"):
        header, _, encoded = encoded.partition(",")
        if not header.endswith(";base64"):
            raise InvalidRequestError('a data: URI in "audio" must be base64 ("data:audio/wav;base64,...")')
    if any(c.isspace() for c in encoded[:1000]) or any(c.isspace() for c in encoded[-1000:]):
        encoded = "".join(encoded.split())  # line-wrapped (MIME) base64
    if "-" in encoded or "_" in encoded:
        encoded = encoded.translate(str.maketrans("-_", "+/"))  # URL-safe alphabet
    size = 0
    try:
        with open(path, "wb") as out:
            for i in range(0, len(encoded), BASE64_SLICE):
                data = base64.b64decode(encoded[i:i + BASE64_SLICE], validate=True)
                size += len(data)
                out.write(data)
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
    if not isinstance(uri, str):
        raise InvalidRequestError(f'"s3_uri" must be a string, got {type(uri).__name__}')
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise InvalidRequestError(f'"s3_uri" must look like s3://bucket/key, got {uri!r}')
    return parsed.netloc, key


def download_s3(uri: Any, path: Path, max_bytes: Optional[int] = None) -> int:
    """Download the object to ``path``. A missing or forbidden object is the caller's 400; S3 out of reach, a 502."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(uri)
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
