"""Request bodies -> an audio file + options (serve/http/inputs.py), in-process, no model.

The end-to-end versions of these run against the real server in
test_server_inputs.py; these pin down the edge cases cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import textwrap
from pathlib import Path

import pytest
from flask import Flask, request

from serve.errors import WhisperServeError
from serve.http import inputs
from serve.http.errors import status_of
from serve.http.inputs import ScratchDir, ScratchRequest, read_invocation

AUDIO = bytes(range(256)) * 4000  # 1 MB: bigger than werkzeug's 500 kB in-memory form limit
SHA = hashlib.sha256(AUDIO).hexdigest()
B64 = base64.b64encode(AUDIO).decode()
HEADER = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture
def scratch_root(tmp_path) -> Path:
    return tmp_path / "scratch"


@pytest.fixture
def client_for(scratch_root):
    def make(cap: int | None = None):
        app = Flask("test-inputs")
        app.request_class = ScratchRequest

        @app.post("/")
        def route():
            try:
                with ScratchDir(scratch_root) as scratch:
                    inv = read_invocation(request, scratch.path, cap)
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


def test_s3_uri_is_downloaded(client, s3):
    r = client.post("/", json={"s3_uri": "s3://bucket/dir/clip.wav", "parameters": {"task": "transcribe"}})
    assert r.status_code == 200, r.json
    assert r.json["kind"] == "json-s3" and r.json["sha"] == SHA and r.json["options"] == {"task": "transcribe"}


@pytest.mark.parametrize(("uri", "message"), [
    ("s3://bucket/missing.wav", "could not read s3://bucket/missing.wav"),
    ("s3://no-such-bucket/a.wav", "could not read"),
    ("https://bucket/a.wav", "s3://bucket/key"),
    ("s3://bucket/", "s3://bucket/key"),
    (5, "must be a string"),
])
def test_s3_errors_are_400(client, s3, scratch_root, uri, message):
    r = client.post("/", json={"s3_uri": uri})
    assert r.status_code == 400, r.json
    assert message in r.json["message"]
    assert_clean(scratch_root)


def test_s3_object_over_the_cap_is_413_without_downloading(client_for, s3):
    r = client_for(cap=1000).post("/", json={"s3_uri": "s3://bucket/dir/clip.wav"})
    assert r.status_code == 413


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
