"""Local async endpoint against the real server; a stand-in container where a test must see how many
requests are in flight, and a socket server that breaks connections mid-answer."""

from __future__ import annotations

import contextlib
import json
import threading

import boto3
import pytest
import requests
from flask import Flask, request

from localmodes import async_endpoint
from localmodes.async_endpoint import AsyncConfig, AsyncService, create_app
from localmodes.async_queue import DONE, FAILED, QUEUED, RUNNING, Queue
from localmodes.notify import Notifier, parse_sink
from localmodes.server import free_port
from tests.localmodes.test_support import CORRUPT, StandIn, assert_heard, clip_in, real, serving, wait_until

H = "X-Amzn-SageMaker-"


@contextlib.contextmanager
def running_service(tmp_path, endpoint_url, max_concurrent=1, notify=("file:{tmp}/notes.jsonl",), db=None):
    config = AsyncConfig(endpoint_url, str(tmp_path / "out"), str(tmp_path / "fail"), max_concurrent)
    sinks = [parse_sink(spec.format(tmp=tmp_path), "us-east-1") for spec in notify]
    service = AsyncService(config, Queue(db or tmp_path / "queue.sqlite"), Notifier(sinks))
    service.start()
    try:
        with serving(create_app(service)) as url:
            yield service, url
    finally:
        service.stop()
        service.queue.close()


def audio(tmp_path, name, body):
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return str(path)


def notifications(tmp_path):
    path = tmp_path / "notes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def finished(service, n):
    counts = service.queue.counts()
    return counts[DONE] + counts[FAILED] >= n


@real
def test_accepts_at_once_then_writes_outputs_failures_and_notifications(server, tmp_path):
    clip = clip_in("wav", 10)
    with running_service(tmp_path, server.url) as (service, url):
        good = async_endpoint.invoke(url, audio(tmp_path, "a.wav", clip.path.read_bytes()), "whisper-async",
                                     inference_id="req-1", accept="application/json",
                                     custom_attributes="word_timestamps=true")
        response = requests.post(f"{url}/endpoints/whisper-async/async-invocations", timeout=10, headers={
            H + "InputLocation": audio(tmp_path, "b.mp3", CORRUPT), H + "Inference-Id": "req-2"})
        wait_until(lambda: finished(service, 2), 120, "both requests")

    assert good == {"InferenceId": "req-1", "OutputLocation": str(tmp_path / "out" / "req-1.out"),
                    "FailureLocation": str(tmp_path / "fail" / "req-1-error.out")}
    assert response.status_code == 202
    assert response.headers[H + "OutputLocation"] == str(tmp_path / "out" / "req-2.out")
    assert response.headers[H + "FailureLocation"] == str(tmp_path / "fail" / "req-2-error.out")

    output = (tmp_path / "out" / "req-1.out").read_bytes()
    result = json.loads(output)
    assert_heard(clip, result["text"])
    assert result["segments"] and all(s["words"] for s in result["segments"]), "the custom attributes reached it"
    assert not (tmp_path / "out" / "req-2.out").exists()
    error_body = json.loads((tmp_path / "fail" / "req-2-error.out").read_text())
    assert error_body["error"]["type"] == "UnsupportedMediaType"

    notes = {n["inferenceId"]: n for n in notifications(tmp_path)}
    ok, bad = notes["req-1"], notes["req-2"]
    assert ok["invocationStatus"] == "Completed" and bad["invocationStatus"] == "Failed"
    for note in (ok, bad):
        assert {"awsRegion", "eventTime", "receivedTime", "requestParameters", "inferenceId"} <= note.keys()
        assert (note["eventVersion"], note["eventSource"], note["eventName"]) == ("1.0", "aws:sagemaker",
                                                                                  "InferenceResult")
        assert note["requestParameters"]["endpointName"] == "whisper-async"
        assert note["eventTime"].endswith("Z") and note["receivedTime"] <= note["eventTime"]
    assert ok["requestParameters"]["accept"] == "application/json"
    assert ok["requestParameters"]["customAttributes"] == "word_timestamps=true"
    assert ok["responseParameters"] == {"contentType": "application/json", "sentContentLength": len(output),
                                        "outputLocation": good["OutputLocation"]}
    assert ok["outputLocation"] == good["OutputLocation"] and "failureReason" not in ok
    assert bad["failureLocation"] == str(tmp_path / "fail" / "req-2-error.out")
    assert bad["failureReason"].startswith("ClientError: Received client error (415) from model")
    assert "outputLocation" not in bad


def test_runs_at_most_max_concurrent_invocations(tmp_path):
    stand_in = StandIn(delay=0.3)
    with stand_in.running() as backend, running_service(tmp_path, backend, max_concurrent=2) as (service, url):
        for i in range(6):
            async_endpoint.invoke(url, audio(tmp_path, f"{i}.wav", bytes([i]) * 4))
        metrics = requests.get(f"{url}/metrics", timeout=10).json()
        wait_until(lambda: finished(service, 6), 15, "six requests")
        after = requests.get(f"{url}/metrics", timeout=10).json()
    assert stand_in.max_in_flight == 2
    assert metrics["ApproximateBacklogSize"] >= 4, "queued and running requests are the backlog"
    assert metrics["HasBacklogWithoutCapacity"] == 0 and metrics["InstanceCount"] == 1
    assert after["ApproximateBacklogSize"] == 0 and after["Requests"][DONE] == 6


def test_without_a_server_requests_wait_and_the_backlog_shows_no_capacity(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    with running_service(tmp_path, nowhere) as (service, url):
        for i in range(3):
            async_endpoint.invoke(url, audio(tmp_path, f"{i}.wav", b"x"))
        wait_until(lambda: service.queue.counts()[QUEUED] + service.queue.counts()[RUNNING] == 3, 5, "queueing")
        metrics = requests.get(f"{url}/metrics", timeout=10).json()
    assert metrics["ApproximateBacklogSize"] == 3
    assert metrics["HasBacklogWithoutCapacity"] == 1 and metrics["InstanceCount"] == 0
    assert metrics["Requests"][FAILED] == 0 and not (tmp_path / "fail").exists()


@real
def test_a_restart_takes_up_where_the_last_run_stopped(server, tmp_path):
    """Rows left ``running`` by a dead process are sent again; queued ones are kept."""
    db = tmp_path / "queue.sqlite"
    queue = Queue(db)
    common = dict(endpoint_name="e", content_type="audio/x-wav", accept=None, custom_attributes=None,
                  ttl_seconds=3600, timeout_seconds=60)
    clips = [clip_in("wav", 11 + i) for i in range(3)]
    for i, clip in enumerate(clips):
        queue.enqueue(inference_id=f"r{i}", input_location=audio(tmp_path, f"{i}.wav", clip.path.read_bytes()),
                      output_location=str(tmp_path / "out" / f"r{i}.out"),
                      failure_location=str(tmp_path / "fail" / f"r{i}-error.out"), **common)
    assert queue.claim_next().inference_id == "r0"  # then the process "dies"
    queue.close()

    with running_service(tmp_path, server.url, db=db) as (service, _):
        wait_until(lambda: finished(service, 3), 120, "the re-queued requests")
        attempts = {i: service.queue.latest(f"r{i}").attempts for i in range(3)}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r0.out", "r1.out", "r2.out"]
    assert attempts == {0: 2, 1: 1, 2: 1}
    for i, clip in enumerate(clips):
        assert_heard(clip, json.loads((tmp_path / "out" / f"r{i}.out").read_text())["text"])


@real
def test_expired_and_unreadable_requests_fail_with_a_reason(server, tmp_path):
    with running_service(tmp_path, server.url) as (service, url):
        service.queue.enqueue(inference_id="old", endpoint_name="e", input_location=audio(tmp_path, "o.wav", b"o"),
                              content_type=None, accept=None, custom_attributes=None,
                              output_location=str(tmp_path / "out" / "old.out"),
                              failure_location=str(tmp_path / "fail" / "old-error.out"),
                              ttl_seconds=-1, timeout_seconds=60)
        async_endpoint.invoke(url, str(tmp_path / "does-not-exist.wav"), inference_id="gone")
        wait_until(lambda: finished(service, 2), 10, "two failures")
        reasons = {i: service.queue.latest(i).failure_reason for i in ("old", "gone")}
    assert "RequestTTLSeconds" in reasons["old"]
    assert "could not read the input" in reasons["gone"]
    assert json.loads((tmp_path / "fail" / "gone-error.out").read_text())["error"] == reasons["gone"]
    assert {n["inferenceId"]: n["invocationStatus"] for n in notifications(tmp_path)} == {
        "old": "Failed", "gone": "Failed"}


def test_invalid_requests_are_refused_as_the_runtime_api_does(tmp_path):
    with running_service(tmp_path, "http://127.0.0.1:9") as (service, url):
        invoke_url = f"{url}/endpoints/e/async-invocations"
        missing = requests.post(invoke_url, timeout=10)
        bad_ttl = requests.post(invoke_url, timeout=10, headers={H + "InputLocation": "x.wav",
                                                                 H + "RequestTTLSeconds": "5"})
        bad_id = requests.post(invoke_url, timeout=10, headers={H + "InputLocation": "x.wav",
                                                                H + "Inference-Id": "../escape"})
        assert service.queue.counts()[QUEUED] == 0
    for response in (missing, bad_ttl, bad_id):
        assert response.status_code == 400
        assert response.headers["x-amzn-ErrorType"] == "ValidationError"
        assert response.json()["message"]


@real
def test_boto3_sagemaker_runtime_client_works_against_the_service(server, aws, tmp_path):
    clip = clip_in("wav", 14)
    with running_service(tmp_path, server.url) as (service, url):
        runtime = boto3.client("sagemaker-runtime", endpoint_url=url)
        response = runtime.invoke_endpoint_async(EndpointName="whisper",
                                                 InputLocation=audio(tmp_path, "a.wav", clip.path.read_bytes()),
                                                 InferenceId="via-boto3", ContentType="audio/wav", Accept="text/plain")
        wait_until(lambda: finished(service, 1), 120, "the request")
        with pytest.raises(runtime.exceptions.ClientError) as refused:
            runtime.invoke_endpoint_async(EndpointName="whisper", InputLocation="x", InferenceId="../up")
        assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert response["InferenceId"] == "via-boto3"
    assert response["OutputLocation"] == str(tmp_path / "out" / "via-boto3.out")
    assert response["FailureLocation"] == str(tmp_path / "fail" / "via-boto3-error.out")
    assert_heard(clip, (tmp_path / "out" / "via-boto3.out").read_text())


@real
def test_notifications_go_to_sns_topics_and_webhooks(server, aws, tmp_path):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topics, queues = {}, {}
    for kind in ("success", "error"):
        topics[kind] = sns.create_topic(Name=f"async-{kind}")["TopicArn"]
        queues[kind] = sqs.create_queue(QueueName=f"async-{kind}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queues[kind], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topics[kind], Protocol="sqs", Endpoint=arn)

    received, lock = [], threading.Lock()
    hook = Flask("hook")

    @hook.post("/sns")
    def collect():
        with lock:
            received.append((request.headers.get("x-amz-sns-message-type"), request.get_json()))
        return ""

    with serving(hook) as hook_url, running_service(
            tmp_path, server.url, notify=(f"sns:{topics['success']},{topics['error']}", f"{hook_url}/sns")) as (
            svc, url):
        async_endpoint.invoke(url, audio(tmp_path, "ok.wav", clip_in("wav", 15).path.read_bytes()), inference_id="ok")
        async_endpoint.invoke(url, audio(tmp_path, "bad.wav", CORRUPT), inference_id="bad")
        wait_until(lambda: finished(svc, 2) and len(received) == 2, 120, "two notifications")

    def messages(kind):
        got = sqs.receive_message(QueueUrl=queues[kind], MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        return [json.loads(json.loads(m["Body"])["Message"]) for m in got]

    [success] = messages("success")
    [error] = messages("error")
    assert (success["inferenceId"], success["invocationStatus"]) == ("ok", "Completed")
    assert (error["inferenceId"], error["invocationStatus"]) == ("bad", "Failed")
    by_id = {json.loads(env["Message"])["inferenceId"]: (kind, env) for kind, env in received}
    assert by_id["ok"][0] == "Notification" and by_id["ok"][1]["Type"] == "Notification"
    assert by_id["bad"][1]["TopicArn"].endswith(":local-async-error")


@real
def test_an_unwritable_output_fails_the_request_and_the_worker_carries_on(server, tmp_path):
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    config = AsyncConfig(server.url, str(tmp_path / "blocker" / "out"), str(tmp_path / "fail"), 1)
    service = AsyncService(config, Queue(tmp_path / "q.sqlite"), Notifier([]))
    service.start()
    try:
        with serving(create_app(service)) as url:
            async_endpoint.invoke(url, audio(tmp_path, "a.wav", clip_in("wav", 16).path.read_bytes()),
                                  inference_id="first")
            async_endpoint.invoke(url, audio(tmp_path, "b.wav", clip_in("wav", 17).path.read_bytes()),
                                  inference_id="second")
            wait_until(lambda: finished(service, 2), 120, "both requests")
            reasons = [service.queue.latest(i).failure_reason for i in ("first", "second")]
    finally:
        service.stop()
        service.queue.close()
    assert all(r.startswith("InternalFailure") for r in reasons), reasons
    assert sorted(p.name for p in (tmp_path / "fail").iterdir()) == ["first-error.out", "second-error.out"]


@contextlib.contextmanager
def _breaking_server(reply: bytes):
    """Accepts each connection, reads the request's start, sends ``reply`` and hangs up:
    a worker that dies mid-request (empty reply) or cuts its answer off (partial chunked reply)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    hits.append(1)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", hits
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_connection_broken_mid_request_fails_after_a_few_attempts(tmp_path):
    cut_off = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
    for name, reply in (("dropped", b""), ("cut-off", cut_off)):
        with _breaking_server(reply) as (backend, hits), \
                running_service(tmp_path / name, backend) as (service, url):
            async_endpoint.invoke(url, audio(tmp_path, "a.wav", b"audio"), inference_id="r")
            wait_until(lambda: finished(service, 1), 15, f"the {name} request to fail")
            req = service.queue.latest("r")
        assert req.state == FAILED and req.attempts == async_endpoint.MAX_ATTEMPTS == len(hits), name
        assert "connection to the model server broke" in req.failure_reason, req.failure_reason
        assert "could not read the input" not in req.failure_reason
        assert json.loads((tmp_path / name / "fail" / "r-error.out").read_text())["error"] == req.failure_reason


def test_refused_connections_are_no_capacity_and_broken_ones_are_not():
    nowhere = f"http://127.0.0.1:{free_port()}/invocations"
    with pytest.raises(requests.ConnectionError) as refused:
        requests.post(nowhere, data=b"x", timeout=5)
    assert async_endpoint.never_connected(refused.value)
    assert async_endpoint.never_connected(requests.ConnectTimeout("slow"))
    assert not async_endpoint.never_connected(requests.ConnectionError("Connection aborted."))


def test_stopping_mid_request_leaves_the_row_for_the_next_start(tmp_path):
    """A worker still in a request when the service stops must not turn the closed queue into a
    failure object and an error notification: the row stays ``running`` and is re-queued."""
    stand_in = StandIn(delay=1.5)
    db = tmp_path / "queue.sqlite"
    with stand_in.running() as backend:
        with running_service(tmp_path, backend, db=db) as (service, url):
            async_endpoint.invoke(url, audio(tmp_path, "a.wav", b"audio"), inference_id="slow")
            wait_until(lambda: stand_in.in_flight == 1, 10, "the request to reach the server")
            assert service.stop(timeout=0.1) is False  # still in the request
            service.queue.close()  # what a forced shutdown does; the worker then finishes against it
            wait_until(lambda: not any(w.is_alive() for w in service._workers), 10, "the worker to exit")
        assert not (tmp_path / "fail").exists()
        assert [n["invocationStatus"] for n in notifications(tmp_path) if n["invocationStatus"] != "Completed"] == []
        queue = Queue(db)
        try:
            assert queue.latest("slow").state == RUNNING
            assert queue.requeue_running() == 1
        finally:
            queue.close()
