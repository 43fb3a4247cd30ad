"""The three modes end to end, through the real gunicorn server and the embedded tiny.en.

The session's ctranslate2 server (shared with the other server tests); the
batch and async commands run as subprocesses exactly as the README shows
them, with S3 and SNS on moto.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from localmodes.async_queue import DONE, FAILED, QUEUED, RUNNING, Queue
from localmodes.server import free_port
from tests import speech
from tests._moto import moto_environment, reset_moto
from tests.localmodes.test_support import CORRUPT, clip_in, real, subprocess_env, wait_until

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("wav", "mp3", "ogg", "flac", "m4a", "webm", "mp4")


pytestmark = real


@pytest.fixture(scope="module")
def aws(moto_server, tmp_path_factory):
    """moto for the whole module; the environment for this process and the subprocesses."""
    reset_moto(moto_server)
    env = moto_environment(moto_server, tmp_path_factory.mktemp("aws"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield env


def run_module(module: str, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(env),
                          capture_output=True, text=True, timeout=timeout)


# ---- real time -------------------------------------------------------------------------

def test_realtime_one_command(server, aws):
    clip = clip_in("mp3", 1)
    result = run_module("localmodes.realtime", str(clip.path), "--endpoint", server.url, "--accept", "text/plain",
                        env=aws)
    assert result.returncode == 0, result.stderr
    assert speech.wer([clip.text], [result.stdout]) <= speech.MAX_CLIP_WER, result.stdout


# ---- batch transform --------------------------------------------------------------------

def test_batch_transform_s3_mixed_formats_with_one_corrupt_file(server, aws):
    """12 objects in 7 formats, nested; the corrupt one is reported, the 11 others transcribed."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="batch")
    clips = {}
    for i in range(11):
        fmt = FORMATS[i % len(FORMATS)]
        key = f"calls/{'2024/' if i % 2 else ''}clip{i:02d}.{fmt}"
        clips[key] = clip = clip_in(fmt, i)
        s3.upload_file(str(clip.path), "batch", f"input/{key}")
    s3.put_object(Bucket="batch", Key="input/calls/broken.wav", Body=CORRUPT)

    start = time.monotonic()
    result = run_module("localmodes.batch_transform", "--input", "s3://batch/input/", "--output",
                        "s3://batch/output/", "--endpoint", server.url, "--accept", "text/plain", env=aws)
    seconds = time.monotonic() - start

    assert result.returncode == 1, result.stdout + result.stderr
    assert "11 of 12 objects transformed" in result.stdout
    failed_lines = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(failed_lines) == 1 and failed_lines[0].startswith("  s3://batch/input/calls/broken.wav: HTTP 415")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="batch", Prefix="output/")["Contents"]}
    assert keys == {f"output/{key}.out" for key in clips}
    refs, hyps = [], []
    for key, clip in clips.items():
        refs.append(clip.text)
        hyps.append(s3.get_object(Bucket="batch", Key=f"output/{key}.out")["Body"].read().decode())
    assert speech.wer(refs, hyps) <= speech.MAX_SET_WER, list(zip(refs, hyps))
    print(f"\nbatch: 12 objects ({sum(speech.duration(c.path) for c in clips.values()):.0f} s of audio) "
          f"in {seconds:.1f} s, command included")


def test_batch_script_over_a_folder(server, aws, tmp_path):
    """The README's folder form, through local_test/batch_local.sh."""
    inputs = tmp_path / "audio"
    (inputs / "sub").mkdir(parents=True)
    clips = {"a.wav": clip_in("wav", 2), "sub/b.ogg": clip_in("ogg", 3)}
    for name, clip in clips.items():
        (inputs / name).write_bytes(clip.path.read_bytes())
    result = subprocess.run([str(ROOT / "local_test" / "batch_local.sh"), str(inputs), str(tmp_path / "out"),
                             "--endpoint", server.url], env=subprocess_env({**aws, "PYTHON": sys.executable}),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    hyps = [(tmp_path / "out" / f"{name}.out").read_text() for name in clips]
    assert speech.wer([c.text for c in clips.values()], hyps) <= speech.MAX_SET_WER, hyps


# ---- async ----------------------------------------------------------------------------------

class AsyncProcess:
    """``python -m localmodes.async_endpoint serve`` as a subprocess, restartable on the same queue."""

    def __init__(self, server_url: str, env: dict, workdir: Path, output: str, failure: str,
                 notify: list[str], max_concurrent: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = workdir / "queue.sqlite"
        self.log = workdir / "async.log"
        self.env = env
        self.args = ["serve", "--endpoint", server_url, "--port", str(self.port), "--db", str(self.db),
                     "--output", output, "--failure", failure, "--max-concurrent", str(max_concurrent),
                     "--metrics-interval", "0.5"]
        for spec in notify:
            self.args += ["--notify", spec]
        self.process = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "localmodes.async_endpoint", *self.args],
                                            cwd=ROOT, env=subprocess_env(self.env), stdout=log,
                                            stderr=subprocess.STDOUT)
        wait_until(self._up, 60, "the async service")

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/ping", timeout=2).status_code == 200
        return False

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to tidy up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def invoke(self, input_location: str, inference_id: str, accept: str = "text/plain",
               custom_attributes: str = "") -> dict:
        headers = {"X-Amzn-SageMaker-InputLocation": input_location, "X-Amzn-SageMaker-Inference-Id": inference_id,
                   "X-Amzn-SageMaker-Accept": accept}
        if custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        response = requests.post(f"{self.url}/endpoints/whisper-local/async-invocations", timeout=10,
                                 headers=headers)
        assert response.status_code == 202, response.text
        return response.json()

    def metrics(self) -> dict:
        return requests.get(f"{self.url}/metrics", timeout=10).json()

    def finished(self, n: int) -> bool:
        requests_ = self.metrics()["Requests"]
        return requests_[DONE] + requests_[FAILED] >= n


@contextlib.contextmanager
def async_service(*args, **kwargs):
    service = AsyncProcess(*args, **kwargs)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def sns_to_sqs(name: str) -> tuple[str, str]:
    """A topic and an SQS queue subscribed to it (how tests read what SNS delivered)."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, queue


def drain(queue_url: str) -> list[dict]:
    sqs, out = boto3.client("sqs"), []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        out += [json.loads(json.loads(m["Body"])["Message"]) for m in got]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


def test_async_ten_requests_one_failure_with_error_notification(server, aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="async")
    success_topic, success_queue = sns_to_sqs("whisper-success")
    error_topic, error_queue = sns_to_sqs("whisper-error")
    clips = {}
    for i in range(10):
        fmt = FORMATS[i % len(FORMATS)]
        clips[f"req-{i:02d}"] = clip = clip_in(fmt, i + 4)
        s3.upload_file(str(clip.path), "async", f"in/req-{i:02d}.{fmt}")
    s3.put_object(Bucket="async", Key="in/broken.mp3", Body=CORRUPT)

    notes_file = tmp_path / "notifications.jsonl"
    with async_service(server.url, aws, tmp_path, "s3://async/out/", "s3://async/fail/",
                       [f"sns:{success_topic},{error_topic}", f"file:{notes_file}"], max_concurrent=2) as svc:
        answers = {}
        for i, inference_id in enumerate(clips):
            fmt = FORMATS[i % len(FORMATS)]
            answers[inference_id] = svc.invoke(f"s3://async/in/{inference_id}.{fmt}", inference_id)
        answers["broken"] = svc.invoke("s3://async/in/broken.mp3", "broken")
        wait_until(lambda: svc.finished(11), 120, "eleven async requests", poll=0.5)
        metrics = svc.metrics()

    assert metrics["ApproximateBacklogSize"] == 0
    assert metrics["Requests"] == {QUEUED: 0, RUNNING: 0, DONE: 10, FAILED: 1}
    for inference_id, answer in answers.items():
        assert answer["OutputLocation"] == f"s3://async/out/{inference_id}.out"
        assert answer["FailureLocation"] == f"s3://async/fail/{inference_id}-error.out"
    hyps = [s3.get_object(Bucket="async", Key=f"out/{i}.out")["Body"].read().decode() for i in clips]
    assert speech.wer([c.text for c in clips.values()], hyps) <= speech.MAX_SET_WER, hyps
    assert "Contents" not in s3.list_objects_v2(Bucket="async", Prefix="out/broken")
    failure = json.loads(s3.get_object(Bucket="async", Key="fail/broken-error.out")["Body"].read())
    assert failure["error"]["type"] == "UnsupportedMediaType"

    successes, errors = drain(success_queue), drain(error_queue)
    assert sorted(n["inferenceId"] for n in successes) == sorted(clips)
    assert all(n["invocationStatus"] == "Completed" and n["responseParameters"]["outputLocation"]
               == f"s3://async/out/{n['inferenceId']}.out" for n in successes)
    [error] = errors
    assert (error["inferenceId"], error["invocationStatus"]) == ("broken", "Failed")
    assert error["failureLocation"] == "s3://async/fail/broken-error.out"
    assert "(415)" in error["failureReason"]
    assert error["requestParameters"]["inputLocation"] == "s3://async/in/broken.mp3"
    assert len(notes_file.read_text().splitlines()) == 11


def test_async_restart_mid_queue_loses_nothing(server, aws, tmp_path):
    """SIGKILL the service while it runs one request, two done and seven queued: the restart re-queues
    the running one and sends it again (once), and every request is answered and notified."""
    out, fail = tmp_path / "out", tmp_path / "fail"
    notes_file = tmp_path / "notifications.jsonl"
    clips = {f"r{i:02d}": clip_in(FORMATS[i % len(FORMATS)], i) for i in range(10)}
    # Running when the kill lands, on any CPU: three minutes of speech are seven 30 s windows (two engine
    # calls of four windows on CPU), and the kill follows the row turning "running" by one 10 ms poll.
    clips["r02"] = speech.long_clip(3.0)
    service = AsyncProcess(server.url, aws, tmp_path, str(out), str(fail), [f"file:{notes_file}"])
    service.start()
    queue = Queue(service.db)  # read beside the service (sqlite, WAL), as it writes
    try:
        for inference_id, clip in clips.items():
            service.invoke(str(clip.path), inference_id)
        wait_until(lambda: queue.latest("r02").state != QUEUED, 120, "the long request to start", poll=0.01)
        service.kill()
        counts_at_crash = queue.counts()
        assert counts_at_crash == {DONE: 2, RUNNING: 1, QUEUED: 7, FAILED: 0}, counts_at_crash
        assert queue.latest("r02").state == RUNNING

        service.start()
        wait_until(lambda: service.finished(10), 180, "all ten requests after the restart", poll=0.5)
        metrics = service.metrics()
        attempts = {i: queue.latest(i).attempts for i in clips}
    finally:
        service.stop()
        queue.close()

    assert "re-queued 1 request(s) that were running" in service.log.read_text()
    assert attempts == {i: 2 if i == "r02" else 1 for i in clips}, "only the running one is sent again"
    assert metrics["Requests"][DONE] == 10 and metrics["Requests"][FAILED] == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.out" for i in sorted(clips)]
    assert speech.incomplete(clips["r02"], (out / "r02.out").read_text()) == []
    short = [i for i in clips if i != "r02"]
    hyps = [(out / f"{i}.out").read_text() for i in short]
    assert speech.wer([clips[i].text for i in short], hyps) <= speech.MAX_SET_WER, hyps
    notified = {json.loads(line)["inferenceId"] for line in notes_file.read_text().splitlines()}
    assert notified == set(clips)


@pytest.mark.slow
def test_async_twenty_minute_file_transcribed_completely(server, aws, tmp_path):
    """Long-form, as users run it: without conditioning on the previous window's text, so one
    misheard sentence cannot start a repetition loop (tiny.en does loop on this clip otherwise).
    Complete means nothing dropped: which sentence int8 mishears depends on the CPU."""
    clip = speech.long_clip(20.5)
    minutes = speech.duration(clip.path) / 60
    assert minutes >= 20
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="long")
    s3.upload_file(str(clip.path), "long", "in/long.wav")
    success_topic, success_queue = sns_to_sqs("long-success")

    with async_service(server.url, aws, tmp_path, "s3://long/out/", "s3://long/fail/",
                       [f"sns:{success_topic},"]) as svc:
        start = time.monotonic()
        svc.invoke("s3://long/in/long.wav", "long-1", accept="application/json",
                   custom_attributes="condition_on_previous_text=false")
        wait_until(lambda: svc.finished(1), 600, "the 20-minute transcription", poll=1.0)
        seconds = time.monotonic() - start
        state = svc.metrics()["Requests"]

    assert state[DONE] == 1, state
    body = s3.get_object(Bucket="long", Key="out/long-1.out")["Body"].read()
    result = json.loads(body)
    assert speech.incomplete(clip, result["text"], result["segments"]) == []
    [note] = drain(success_queue)
    assert note["inferenceId"] == "long-1" and note["responseParameters"]["sentContentLength"] == len(body)
    assert note["requestParameters"]["customAttributes"] == "condition_on_previous_text=false"
    print(f"\nasync: {minutes:.1f} min of audio in {seconds:.1f} s")
