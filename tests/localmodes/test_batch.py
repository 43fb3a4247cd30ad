"""Local batch transform against the real server; a stand-in container where a test needs answers on cue
(a chosen MaxConcurrentTransforms, no /execution-parameters, 503s and 500s)."""

from __future__ import annotations

import json
import threading

import boto3
import pytest

from localmodes import batch_transform
from localmodes.batch_transform import JobConfig, transform
from tests.localmodes.test_support import CORRUPT, StandIn, assert_heard, clip_in, real
from tests.test_server_hostile import invocations

FAST = JobConfig(accept="text/plain", retry_delay=0.01)


def make_inputs(root, names_and_bodies):
    for name, body in names_and_bodies.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def spoken(clips: dict) -> dict:
    return {name: clip.path.read_bytes() for name, clip in clips.items()}


@real
def test_every_object_becomes_one_request_and_one_out_file(server, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    clips = {"a.wav": clip_in("wav", 0), "talks/b.mp3": clip_in("mp3", 1), "talks/2024/c.webm": clip_in("webm", 2),
             "notes.bin": clip_in("wav", 3)}  # no known extension: sent as octet-stream, ffmpeg finds the format
    make_inputs(inputs, spoken(clips))
    before = len(invocations(server))
    report = transform(server.url, str(inputs), str(outputs), JobConfig(accept="text/vtt", retry_delay=0.01),
                       progress=False)

    assert not report.failed
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*") if p.is_file()) == [
        "a.wav.out", "notes.bin.out", "talks/2024/c.webm.out", "talks/b.mp3.out"]
    for name, clip in clips.items():
        vtt = (outputs / f"{name}.out").read_text()
        assert vtt.startswith("WEBVTT\n"), vtt
        text = " ".join(line for line in vtt.splitlines()[1:] if line and "-->" not in line)
        assert_heard(clip, text)
    sent = {e["body_bytes"]: (e["content_type"], e["accept"]) for e in invocations(server)[before:]}
    assert {name: sent[len(body)] for name, body in spoken(clips).items()} == {
        "a.wav": ("audio/wav", "text/vtt"), "talks/b.mp3": ("audio/mpeg", "text/vtt"),
        "talks/2024/c.webm": ("audio/webm", "text/vtt"), "notes.bin": ("application/octet-stream", "text/vtt")}


@real
def test_custom_attributes_reach_the_server(server, tmp_path):
    make_inputs(tmp_path / "in", {"a.wav": clip_in("wav", 4).path.read_bytes()})
    report = transform(server.url, str(tmp_path / "in"), str(tmp_path / "out"),
                       JobConfig(custom_attributes="word_timestamps=true", retry_delay=0.01), progress=False)
    assert not report.failed
    segments = json.loads((tmp_path / "out" / "a.wav.out").read_text())["segments"]
    assert segments and all(s["words"] for s in segments), segments


def test_keeps_max_concurrent_transforms_in_flight_and_no_more(tmp_path):
    make_inputs(tmp_path / "in", {f"{i}.wav": bytes([i]) * 8 for i in range(8)})
    stand_in = StandIn(max_concurrent_transforms=3, delay=0.3)
    with stand_in.running() as url:
        report = transform(url, str(tmp_path / "in"), str(tmp_path / "out"), FAST, progress=False)
    assert report.parameters.max_concurrent_transforms == 3
    assert stand_in.max_in_flight == 3
    assert len(report.succeeded) == 8


def test_without_execution_parameters_sagemaker_defaults_apply(tmp_path):
    make_inputs(tmp_path / "in", {f"{i}.wav": bytes([i]) * 8 for i in range(3)})
    stand_in = StandIn(execution_parameters=False, delay=0.2)
    with stand_in.running() as url:
        report = transform(url, str(tmp_path / "in"), str(tmp_path / "out"), FAST, progress=False)
    assert (report.parameters.max_concurrent_transforms, report.parameters.max_payload_mb) == (1, 6)
    assert stand_in.max_in_flight == 1


def test_retries_server_errors_but_not_client_errors_and_keeps_the_rest(tmp_path):
    make_inputs(tmp_path / "in", {"good.wav": b"fine audio", "bad.wav": b"corrupt bytes",
                                  "flaky.wav": b"flaky audio", "down.wav": b"crash audio"})
    stand_in = StandIn(flaky_failures=2)
    with stand_in.running() as url:
        report = transform(url, str(tmp_path / "in"), str(tmp_path / "out"),
                           JobConfig(max_retries=3, retry_delay=0.01), progress=False)

    by_key = {o.obj.relative_key: o for o in report.outcomes}
    assert by_key["good.wav"].ok and by_key["good.wav"].attempts == 1
    assert by_key["flaky.wav"].ok and by_key["flaky.wav"].attempts == 3
    assert not by_key["bad.wav"].ok and by_key["bad.wav"].attempts == 1, "a 415 is final"
    assert "415" in by_key["bad.wav"].error and "UnsupportedMediaType" in by_key["bad.wav"].error
    assert not by_key["down.wav"].ok and by_key["down.wav"].attempts == 4, "1 try + InvocationsMaxRetries"
    assert stand_in.attempts[b"crash audio"] == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["flaky.wav.out", "good.wav.out"]


@real
def test_an_object_over_max_payload_fails_without_being_sent(server, tmp_path):
    small = clip_in("wav", 5).path.read_bytes()
    make_inputs(tmp_path / "in", {"big.wav": b"x" * (2 * 1024 * 1024 + 1), "small.wav": small})
    before = len(invocations(server))
    report = transform(server.url, str(tmp_path / "in"), str(tmp_path / "out"), FAST, max_payload_mb=2,
                       progress=False)
    [failed] = report.failed
    assert failed.obj.relative_key == "big.wav" and "MaxPayloadInMB=2" in failed.error
    assert [e["body_bytes"] for e in invocations(server)[before:]] == [len(small)]


def test_retries_are_bounded_as_in_model_client_config(tmp_path):
    with pytest.raises(ValueError):
        transform("http://127.0.0.1:9", str(tmp_path), str(tmp_path), JobConfig(max_retries=4))


@real
def test_s3_prefix_in_and_out(server, aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="jobs")
    one, two = clip_in("flac", 6), clip_in("m4a", 7)
    s3.put_object(Bucket="jobs", Key="input/x/one.flac", Body=one.path.read_bytes())
    s3.put_object(Bucket="jobs", Key="input/two.m4a", Body=two.path.read_bytes())
    report = transform(server.url, "s3://jobs/input/", "s3://jobs/output", FAST, progress=False)
    assert not report.failed
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="jobs", Prefix="output/")["Contents"])
    assert keys == ["output/two.m4a.out", "output/x/one.flac.out"]
    out = s3.get_object(Bucket="jobs", Key="output/x/one.flac.out")
    assert out["ContentType"].startswith("text/plain")
    assert_heard(one, out["Body"].read().decode())


@real
def test_command_lists_failed_objects_and_exits_non_zero(server, tmp_path, capsys):
    make_inputs(tmp_path / "in", {"ok.wav": clip_in("wav", 8).path.read_bytes(), "broken.mp3": CORRUPT})
    code = batch_transform.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                 "--endpoint", server.url, "--accept", "text/plain", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 of 2 objects transformed" in out
    assert f"{tmp_path / 'in' / 'broken.mp3'}: HTTP 415" in out
    assert (tmp_path / "out" / "ok.wav.out").exists()


@real
def test_command_exits_zero_when_all_succeed(server, tmp_path):
    clip = clip_in("wav", 9)
    make_inputs(tmp_path / "in", {"ok.wav": clip.path.read_bytes()})
    code = batch_transform.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                 "--endpoint", server.url, "--no-progress"])
    assert code == 0
    assert_heard(clip, json.loads((tmp_path / "out" / "ok.wav.out").read_text())["text"])


@real
def test_an_empty_input_is_an_error_not_a_success(server, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code = batch_transform.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                 "--endpoint", server.url, "--no-progress"])
    assert code == 2 and "no objects found" in capsys.readouterr().err


@real
def test_ctrl_c_cancels_the_files_not_yet_started(server, tmp_path, monkeypatch):
    """Ctrl-C in the first file; a second one may have started before it was seen, and it is held until
    the command has raised. The worker then runs what was not cancelled: that second file at most."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(20):
        (inputs / f"{i:02}.wav").write_bytes(b"audio")
    calls, workers, raised = [], set(), threading.Event()

    def interrupted(*args, **kwargs):
        calls.append(1)
        workers.add(threading.current_thread())
        if len(calls) == 1:
            raise KeyboardInterrupt
        raised.wait(60)

    monkeypatch.setattr(batch_transform, "_transform_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transform(server.url, str(inputs), str(tmp_path / "out"), max_concurrent=1, progress=False)
    raised.set()
    for worker in workers:
        worker.join(60)
    assert not any(worker.is_alive() for worker in workers)
    assert len(calls) <= 2, f"{len(calls)} of 20 files run: the queued files were not cancelled"
