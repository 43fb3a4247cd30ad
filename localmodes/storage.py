"""One small abstraction over "locations": local folders, ``file://`` and ``s3://``.

Batch transform and async inference both read inputs from, and write outputs
to, S3 on SageMaker. Locally users have folders; in tests we have moto. Every
module here goes through these few functions so that the three are
interchangeable and the modes themselves never care which one they are given.

boto3 reads ``AWS_ENDPOINT_URL`` (and the usual credential variables), so
pointing it at moto's server or LocalStack needs no option here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class StoredObject:
    """An object found under a prefix: where it is, and its key relative to the prefix.

    The relative key is what batch transform keeps when it writes
    ``<output prefix>/<relative key>.out``.
    """

    uri: str
    relative_key: str
    size: int


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """A local location (plain path or ``file://`` URI) as a Path."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise ValueError(f"unsupported location {uri!r}: use a folder, file:// or s3://")
    return Path(uri)


def join(prefix: str, relative: str) -> str:
    """``prefix`` + ``/`` + ``relative``, for S3 URIs and local paths alike."""
    relative = relative.lstrip("/")
    if is_s3(prefix):
        return prefix.rstrip("/") + "/" + relative
    return str(local_path(prefix) / relative)


# ---- S3 client ----------------------------------------------------------------

_clients: dict = {}
_clients_lock = threading.Lock()


def s3_client():
    """A shared S3 client, one per ``AWS_ENDPOINT_URL`` (tests start several moto servers)."""
    return _client("s3")


def _client(service: str):
    import boto3

    key = (service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(service)
        return _clients[key]


def sns_client():
    return _client("sns")


# ---- listing ------------------------------------------------------------------

def list_objects(prefix: str) -> list[StoredObject]:
    """Every object under ``prefix``, sorted by relative key.

    A prefix names a folder (``s3://b/in`` and ``s3://b/in/`` both mean the
    objects below ``in/``) or a single object. Hidden files (``.DS_Store``...)
    and S3 folder markers are skipped: they are never audio a user meant to send.
    """
    found = _list_s3(prefix) if is_s3(prefix) else _list_local(prefix)
    return sorted(found, key=lambda o: o.relative_key)


def _list_local(prefix: str) -> list[StoredObject]:
    root = local_path(prefix)
    if root.is_file():
        return [StoredObject(str(root), root.name, root.stat().st_size)]
    if not root.is_dir():
        raise FileNotFoundError(f"no such input folder or file: {root}")
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(StoredObject(str(path), rel.as_posix(), path.stat().st_size))
    return out


def _list_s3(prefix: str) -> list[StoredObject]:
    bucket, key = split_s3(prefix)
    client = s3_client()
    if key and not key.endswith("/"):
        # a single object named exactly by the prefix
        try:
            head = client.head_object(Bucket=bucket, Key=key)
            return [StoredObject(prefix, key.rsplit("/", 1)[-1], head["ContentLength"])]
        except client.exceptions.ClientError:
            key += "/"
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            rel = item["Key"][len(key):]
            if not rel or rel.endswith("/") or any(p.startswith(".") for p in rel.split("/")):
                continue
            out.append(StoredObject(f"s3://{bucket}/{item['Key']}", rel, item["Size"]))
    return out


# ---- reading and writing -----------------------------------------------------------

@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local file holding the object, for streaming it to the server.

    Local files are used in place; S3 objects are downloaded to a temporary
    file (audio can be hundreds of MB, so never into memory) removed afterwards.
    """
    if not is_s3(uri):
        path = local_path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        yield path
        return
    bucket, key = split_s3(uri)
    fd, tmp = tempfile.mkstemp(prefix="localmodes-", suffix=Path(key).suffix)
    os.close(fd)
    try:
        s3_client().download_file(bucket, key, tmp)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return local_path(uri).read_bytes()


def write_bytes(uri: str, data: bytes, content_type: Optional[str] = None) -> None:
    """Write ``data`` at ``uri``.

    Local writes go through a temporary file and a rename, so a reader (or a
    rerun after a crash) never mistakes a half-written output for a whole one.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client = s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except client.exceptions.ClientError:
            return False
    return local_path(uri).is_file()

