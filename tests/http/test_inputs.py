"""Request bodies -> an audio file + options (serve/http/inputs.py), in-process, no model.

The end-to-end versions of these run against the real server in
test_server_inputs.py; these pin down the edge cases cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import textwrap
from pathlib import Path

import pytest
from flask import Flask, request

from serve.errors import WhisperServeError
from serve.http import inputs
from serve.http.errors import status_of
from serve.http.inputs import Limits, ScratchDir, ScratchRequest, read_invocation

AUDIO = bytes(range(256)) * 4000  # 1 MB: bigger than werkzeug's 500 kB in-memory form limit
SHA = hashlib.sha256(AUDIO).hexdigest()
B64 = base64.b64encode(AUDIO).decode()
HEADER = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture
def scratch_root(tmp_path) -> Path:
    return tmp_path / "scratch"


@pytest.fixture
def client_for(scratch_root):
    def make(cap: int | None = None, **limits):
        app = Flask("test-inputs")
        app.request_class = ScratchRequest

        @app.post("/")
        def route():
            try:
                with ScratchDir(scratch_root) as scratch:
                    inv = read_invocation(request, scratch.path, Limits(max_body_bytes=cap, **limits))
                    return {"kind": inv.kind, "bytes": inv.body_bytes, "sha": hashlib.sha256(inv.path.read_bytes()).hexdigest(),
                            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in inv.options.set_options().items()},
                            "in_scratch": inv.path.parent == scratch.path, "files": sorted(os.listdir(scratch.path))}
            except WhisperServeError as exc:
                return {"type": exc.error_type, "message": exc.message}, status_of(exc)

        return app.test_client()

    return make


@pytest.fixture
def client(client_for):
    return client_for()


def assert_clean(scratch_root: Path) -> None:
    assert scratch_root.is_dir() and list(scratch_root.iterdir()) == []


# --- raw bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/x-audio", "video/mp4", "application/octet-stream", None])
def test_raw_body_is_streamed_to_a_file_whatever_the_label(client, scratch_root, monkeypatch, content_type):
    monkeypatch.setattr(inputs, "CHUNK_BYTES", 4096)  # many chunks
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/", data=AUDIO, headers={**headers, HEADER: "language=en;beam_size=2"})
    assert r.status_code == 200, r.json
    assert r.json["kind"] == "raw" and r.json["sha"] == SHA and r.json["bytes"] == len(AUDIO)
    assert r.json["options"] == {"language": "en", "beam_size": 2}
    assert r.json["in_scratch"]
    assert_clean(scratch_root)


def test_empty_body_is_400(client):
    r = client.post("/", data=b"", headers={"Content-Type": "audio/wav"})
    assert r.status_code == 400 and "empty" in r.json["message"]


def test_bad_header_parameter_fails_before_the_body_is_read(client):
    r = client.post("/", data=AUDIO, headers={"Content-Type": "audio/wav", HEADER: "beam_size=zero"})
    assert r.status_code == 400 and "beam_size" in r.json["message"]


def test_cap_by_content_length_and_by_counting(client_for, scratch_root):
    capped = client_for(cap=len(AUDIO) - 1)
    r = capped.post("/", data=AUDIO, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 413 and "WHISPER_MAX_BODY_MB" in r.json["message"]
    # without a Content-Length (chunked upload) the bytes are counted while streaming
    r = capped.post("/", input_stream=io.BytesIO(AUDIO), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 413
    assert_clean(scratch_root)
    assert client_for(cap=len(AUDIO)).post("/", data=AUDIO).status_code == 200


# --- JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoded", [
    B64,
    "data:audio/wav;base64," + B64,
    "\n".join(textwrap.wrap(B64, 76)),  # MIME line-wrapped
    base64.urlsafe_b64encode(AUDIO).decode(),
])
def test_json_base64_variants(client, encoded, monkeypatch):
    monkeypatch.setattr(inputs, "BASE64_SLICE", 4 * 1000)  # decode in many slices
    r = client.post("/", json={"audio": encoded})
    assert r.status_code == 200, r.json
    assert r.json["kind"] == "json-base64" and r.json["sha"] == SHA
    assert r.json["files"] == ["audio"]  # the spooled JSON body is gone already


def test_json_parameters_top_level_and_nested_and_header_precedence(client):
    r = client.post("/", json={"inputs": B64, "language": "en", "parameters": {"word_timestamps": True}},
                    headers={HEADER: "language=fr;beam_size=3"})
    assert r.status_code == 200, r.json
    # the body wins over the header; the header still fills what the body leaves unset
    assert r.json["options"] == {"language": "en", "word_timestamps": True, "beam_size": 3}


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be an object"),
    (b'{"language": "en"}', 400, 'exactly one of "audio"'),
    (b'{"audio": "AAAA", "s3_uri": "s3://b/k"}', 400, 'exactly one of "audio"'),
    (b'{"audio": "not base64!"}', 400, "not valid base64"),
    (b'{"audio": "QUJD"}', 200, None),
    (b'{"audio": 12}', 400, "base64 string"),
    (b'{"audio": "data:audio/wav,AAAA"}', 400, "data: URI"),
    (b'{"audio": "QUJD", "parameters": "x"}', 400, '"parameters" must be'),
    (b'{"audio": "QUJD", "beam_size": 2, "parameters": {"beam_size": 3}}', 400, "both at the top level"),
    (b'{"audio": "QUJD", "word_timestamp": true}', 400, "unknown parameter 'word_timestamp' in the JSON body"),
    (b'{"audio": ""}', 400, "empty"),
])
def test_json_errors(client, scratch_root, body, status, message):
    r = client.post("/", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.json
    if message:
        assert message in r.json["message"]
    assert_clean(scratch_root)


def test_json_lines_content_type_is_json(client):
    r = client.post("/", data=b'{"audio": "QUJD"}\n', headers={"Content-Type": "application/jsonlines"})
    assert r.status_code == 200 and r.json["kind"] == "json-base64"


def test_a_key_given_twice_is_refused_at_any_depth(client):
    r = client.post("/", data=b'{"audio": "QUJD", "parameters": {"beam_size": 2, "beam_size": 3}}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "'beam_size' more than once" in r.json["message"]


class Unread(io.BytesIO):
    """A request body that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size=-1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.read_bytes += n
        return n

    read1, readline = read, read


def test_a_json_body_over_the_cap_is_413_before_a_byte_is_read(client_for, scratch_root):
    body = json.dumps({"audio": B64}).encode()
    stream = Unread(body)
    r = client_for(max_json_bytes=len(body) - 1).post(
        "/", input_stream=stream, content_length=len(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.json
    message = r.json["message"]
    assert "WHISPER_MAX_JSON_MB" in message and "raw body" in message and "s3_uri" in message
    assert stream.read_bytes == 0
    assert_clean(scratch_root)


def test_a_chunked_json_body_over_the_cap_is_413_by_counting(client_for, scratch_root):
    body = json.dumps({"audio": B64}).encode()
    r = client_for(max_json_bytes=len(body) - 1).post("/", input_stream=io.BytesIO(body),
                                                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "WHISPER_MAX_JSON_MB" in r.json["message"]
    assert_clean(scratch_root)


def test_the_smaller_cap_speaks_and_raw_bodies_are_not_json_capped(client_for):
    body = json.dumps({"audio": B64}).encode()
    r = client_for(cap=len(body) - 1, max_json_bytes=len(body) * 2).post(
        "/", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "WHISPER_MAX_BODY_MB" in r.json["message"]
    r = client_for(max_json_bytes=1000).post("/", data=AUDIO, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and r.json["sha"] == SHA
    r = client_for(max_json_bytes=len(body)).post("/", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json["sha"] == SHA


def test_base64_json_is_decoded_holding_one_copy_of_the_string(tmp_path, monkeypatch):
    """The document is parsed as a stream and the audio decoded as it is handed over: Python holds the
    base64 string once (json.load held the file's text and the parsed string: over twice)."""
    import tracemalloc

    monkeypatch.setattr(inputs, "BASE64_SLICE", 1 << 18)  # the slices' own copies, small beside the string
    audio = os.urandom(6_000_000)
    encoded = base64.b64encode(audio).decode()
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"language": "en", "audio": encoded, "parameters": {"beam_size": 2}}))
    del encoded
    tracemalloc.start()
    try:
        document, size = inputs._load_json(body, tmp_path / "audio")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == len(audio) and (tmp_path / "audio").read_bytes() == audio
    assert document["language"] == "en" and document["parameters"] == {"beam_size": 2}
    assert peak < 1.4 * body.stat().st_size, f"{peak / 1e6:.1f} MB traced for a {body.stat().st_size / 1e6:.1f} MB body"


# --- S3 (moto, in process) -------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch):
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(inputs, "_s3_client", None)
    with mock_aws():
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket="bucket")
        client.put_object(Bucket="bucket", Key="dir/clip.wav", Body=AUDIO)
        yield client
    inputs._s3_client = None


@pytest.fixture
def s3_client_for(client_for):
    """A client whose server may read s3://bucket/dir (WHISPER_S3_ALLOW)."""
    return lambda **limits: client_for(**{"s3_allow": ("s3://bucket/dir",), **limits})


def test_s3_uri_is_downloaded(s3_client_for, s3):
    r = s3_client_for().post("/", json={"s3_uri": "s3://bucket/dir/clip.wav", "parameters": {"task": "transcribe"}})
    assert r.status_code == 200, r.json
    assert r.json["kind"] == "json-s3" and r.json["sha"] == SHA and r.json["options"] == {"task": "transcribe"}


@pytest.mark.parametrize(("uri", "message"), [
    ("s3://bucket/dir/missing.wav", "could not read s3://bucket/dir/missing.wav"),
    ("https://bucket/a.wav", "s3://bucket/key"),
    ("s3://bucket/", "s3://bucket/key"),
    (5, "must be a string"),
])
def test_s3_errors_are_400(s3_client_for, s3, scratch_root, uri, message):
    r = s3_client_for().post("/", json={"s3_uri": uri})
    assert r.status_code == 400, r.json
    assert message in r.json["message"]
    assert_clean(scratch_root)


def test_s3_object_over_the_cap_is_413_without_downloading(s3_client_for, s3):
    r = s3_client_for(cap=1000).post("/", json={"s3_uri": "s3://bucket/dir/clip.wav"})
    assert r.status_code == 413


# --- S3 allowlist: WHISPER_S3_ALLOW ----------------------------------------------------------


@pytest.fixture
def s3_untouched(monkeypatch):
    """Records whether S3 was asked anything (the stub client then fails the request)."""
    asked: list[str] = []

    def client():
        asked.append("client")
        raise RuntimeError("S3 was asked")

    monkeypatch.setattr(inputs, "_s3", client)
    return asked


def test_without_an_allowlist_s3_uri_is_refused_naming_the_setting(client, s3_untouched, scratch_root):
    r = client.post("/", json={"s3_uri": "s3://bucket/dir/clip.wav"})
    assert r.status_code == 400 and "WHISPER_S3_ALLOW" in r.json["message"]
    assert s3_untouched == []
    assert_clean(scratch_root)


def test_outside_the_allowlist_the_answer_is_the_same_whether_or_not_the_object_exists(s3_client_for, s3):
    s3.put_object(Bucket="bucket", Key="secret/clip.wav", Body=AUDIO)
    client = s3_client_for(cap=1000)  # with a cap, an object S3 was asked about would show its size (413)
    answers = []
    for uri in ("s3://bucket/secret/clip.wav", "s3://bucket/secret/missing.wav"):
        r = client.post("/", json={"s3_uri": uri})
        answers.append((r.status_code, r.json["type"], r.json["message"].replace(uri, "<uri>")))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 400 and "WHISPER_S3_ALLOW" in answers[0][2]


@pytest.mark.parametrize(("allow", "uri", "allowed"), [
    ("s3://bucket/pre", "s3://bucket/pre/x.wav", True),
    ("s3://bucket/pre", "s3://bucket/pre", True),  # the entry names the object itself
    ("s3://bucket/pre", "s3://bucket/prefix2/x.wav", False),  # whole segments, not a string prefix (as IAM's)
    ("s3://bucket/pre/", "s3://bucket/prefix2/x.wav", False),
    ("s3://bucket/pre", "s3://bucket/pre-x/y.wav", False),
    ("s3://bucket/", "s3://bucket/any/thing.wav", True),
    ("s3://bucket", "s3://bucket/any/thing.wav", True),
    ("s3://bucket/pre", "s3://bucket2/pre/x.wav", False),  # another bucket
    ("s3://buck/pre", "s3://bucket/pre/x.wav", False),  # a bucket name is not a prefix either
    ("s3://bucket/pre", "s3://bucket/pre/../secret.wav", None),  # "..": refused whatever the allowlist says
    ("s3://bucket/", "s3://bucket/a/./b.wav", None),
])
def test_a_prefix_matches_whole_path_segments(client_for, s3_untouched, allow, uri, allowed):
    from serve.settings import Settings

    allow_list = Settings.from_env({"WHISPER_S3_ALLOW": allow}).s3_allow
    r = client_for(s3_allow=allow_list).post("/", json={"s3_uri": uri})
    if allowed:
        assert s3_untouched == ["client"]  # S3 was asked (and the stub failed the request)
        return
    assert r.status_code == 400 and s3_untouched == []
    assert ('"." or ".."' if allowed is None else "outside WHISPER_S3_ALLOW") in r.json["message"]


def test_the_key_is_taken_literally(s3_client_for, s3):
    """``?`` and ``#`` belong to the key: a URL parser would read another object than the one named."""
    s3.put_object(Bucket="bucket", Key="dir/a?versionId=1#x.wav", Body=b"literal")
    s3.put_object(Bucket="bucket", Key="dir/a", Body=b"truncated")
    r = s3_client_for().post("/", json={"s3_uri": "s3://bucket/dir/a?versionId=1#x.wav"})
    assert r.status_code == 200 and r.json["sha"] == hashlib.sha256(b"literal").hexdigest()


# --- multipart -------------------------------------------------------------------------------


def test_multipart_file_spools_into_the_scratch_dir_and_fields_are_parameters(client, scratch_root, monkeypatch):
    spooled: list[Path] = []
    original = ScratchRequest._get_file_stream

    def spy(self, *args, **kwargs):
        stream = original(self, *args, **kwargs)
        spooled.append(Path(stream.name))
        return stream

    monkeypatch.setattr(ScratchRequest, "_get_file_stream", spy)
    r = client.post("/", data={"file": (io.BytesIO(AUDIO), "clip.wav"), "language": "en", "word_timestamps": "true"},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    assert r.json["kind"] == "multipart" and r.json["sha"] == SHA
    assert r.json["options"] == {"language": "en", "word_timestamps": True}
    assert len(spooled) == 1 and spooled[0].parent.parent == scratch_root  # not the system temp dir
    assert r.json["files"] == ["audio"]  # the part was moved, not copied
    assert_clean(scratch_root)


@pytest.mark.parametrize("field", ["file", "audio", "upload"])
def test_multipart_file_field_names(client, field):
    r = client.post("/", data={field: (io.BytesIO(b"abc"), "a.wav")}, content_type="multipart/form-data")
    assert r.status_code == 200 and r.json["sha"] == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(("data", "message"), [
    ({"language": "en"}, "no file field"),
    ({"a": (io.BytesIO(b"1"), "a.wav"), "b": (io.BytesIO(b"2"), "b.wav")}, "several file fields"),
    ({"file": (io.BytesIO(b"1"), "a.wav"), "beam_size": "wide"}, "beam_size"),
])
def test_multipart_errors(client, scratch_root, data, message):
    r = client.post("/", data=data, content_type="multipart/form-data")
    assert r.status_code == 400 and message in r.json["message"]
    assert_clean(scratch_root)


def test_scratch_dir_is_removed_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ScratchDir(tmp_path) as scratch:
            (scratch.path / "partial").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
