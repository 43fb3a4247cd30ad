"""localmodes.storage: folders, file:// and s3:// (on moto) behave the same."""

from __future__ import annotations

import boto3
import pytest

from localmodes import storage


def test_local_listing_keeps_relative_paths_and_skips_hidden(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.wav").write_bytes(b"1")
    (tmp_path / "sub" / "b.mp3").write_bytes(b"22")
    (tmp_path / "sub" / "deeper" / "c.ogg").write_bytes(b"333")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"x")

    found = storage.list_objects(str(tmp_path))

    assert [(o.relative_key, o.size) for o in found] == [("a.wav", 1), ("sub/b.mp3", 2), ("sub/deeper/c.ogg", 3)]
    assert storage.list_objects(f"file://{tmp_path}") == found


def test_a_single_file_is_a_prefix_of_one(tmp_path):
    (tmp_path / "one.wav").write_bytes(b"abc")
    [obj] = storage.list_objects(str(tmp_path / "one.wav"))
    assert obj.relative_key == "one.wav"


def test_missing_local_input_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.list_objects(str(tmp_path / "nope"))


def test_join_works_for_both_kinds():
    assert storage.join("s3://b/out/", "x/y.wav.out") == "s3://b/out/x/y.wav.out"
    assert storage.join("s3://b/out", "/y.out") == "s3://b/out/y.out"
    assert storage.join("/tmp/out", "x/y.out") == "/tmp/out/x/y.out"


def test_local_write_creates_folders_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "deep" / "er" / "x.out"
    storage.write_bytes(str(target), b"hello")
    storage.write_bytes(f"file://{target}", b"hello again")
    assert target.read_bytes() == b"hello again"
    assert [p.name for p in target.parent.iterdir()] == ["x.out"]
    assert storage.exists(str(target)) and not storage.exists(str(tmp_path / "other"))


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError):
        storage.list_objects("gs://bucket/x")


def test_s3_prefix_listing_reading_and_writing(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="audio")
    for key, body in {"in/a.wav": b"A", "in/sub/b.mp3": b"BB", "in/sub/": b"", "in/.hidden": b"h",
                      "input-other/c.wav": b"C", "elsewhere/d.wav": b"D"}.items():
        s3.put_object(Bucket="audio", Key=key, Body=body)

    found = storage.list_objects("s3://audio/in")
    assert [(o.uri, o.relative_key, o.size) for o in found] == [
        ("s3://audio/in/a.wav", "a.wav", 1), ("s3://audio/in/sub/b.mp3", "sub/b.mp3", 2)]
    assert storage.list_objects("s3://audio/in/") == found
    [single] = storage.list_objects("s3://audio/in/sub/b.mp3")
    assert single.relative_key == "b.mp3"

    with storage.local_copy("s3://audio/in/sub/b.mp3") as path:
        assert path.read_bytes() == b"BB"
        copy = path
    assert not copy.exists(), "the temporary download is removed"

    storage.write_bytes("s3://audio/out/sub/b.mp3.out", b"text", "text/plain")
    head = s3.head_object(Bucket="audio", Key="out/sub/b.mp3.out")
    assert head["ContentType"] == "text/plain"
    assert storage.read_bytes("s3://audio/out/sub/b.mp3.out") == b"text"
    assert storage.exists("s3://audio/out/sub/b.mp3.out")
    assert not storage.exists("s3://audio/out/missing")
