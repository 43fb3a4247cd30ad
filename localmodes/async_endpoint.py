"""Local asynchronous endpoint: InvokeEndpointAsync in front of a local container server.

    python -m localmodes.async_endpoint serve --endpoint http://127.0.0.1:8080 \\
        --output DIR|s3://... --failure DIR|s3://... --max-concurrent 1 --db queue.sqlite \\
        --notify file:notifications.jsonl
    python -m localmodes.async_endpoint invoke --service http://127.0.0.1:8081 --input audio.wav --wait

What SageMaker does, and so what this does:

* ``POST /endpoints/<name>/async-invocations`` takes the request's headers
  (``X-Amzn-SageMaker-InputLocation``, ``-Inference-Id``, ``-Content-Type``,
  ``-Accept``, ``-Custom-Attributes``, ``-RequestTTLSeconds``,
  ``-InvocationTimeoutSeconds``), queues it and answers 202 at once with
  ``{"InferenceId"}`` and the ``X-Amzn-SageMaker-OutputLocation`` /
  ``-FailureLocation`` headers -- the real API's wire format, so boto3's
  ``sagemaker-runtime`` client pointed here with ``endpoint_url`` works
  (``OutputLocation`` and ``FailureLocation`` are also in the JSON body, for curl);
* at most MaxConcurrentInvocationsPerInstance (``--max-concurrent``) requests
  run at once against the server, oldest first;
* a 2xx answer goes to ``<output>/<id>.out``; an error answer (its body) to
  ``<failure>/<id>-error.out``; then a success or error notification (see
  :mod:`localmodes.notify`);
* the queue is a sqlite file (:mod:`localmodes.async_queue`): a restart, even
  a kill -9, loses nothing;
* ``GET /metrics`` gives what CloudWatch would show autoscaling --
  ApproximateBacklogSize, ApproximateBacklogSizePerInstance,
  ApproximateAgeOfOldestRequest, HasBacklogWithoutCapacity -- and the service
  logs ApproximateBacklogSize whenever it changes.

Local liberties: input, output and failure locations may be folders as well as
S3; a missing content type is guessed from the input's extension; a server
that cannot be reached (the connection never opens) is "no capacity" (the
request waits, as it would for an instance to scale out from zero) rather than
a failure. A connection that breaks once the request is under way (the worker
was killed: timeout, out of memory, crash) is tried again at most
``MAX_ATTEMPTS`` times in all, then fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import requests
from flask import Flask, jsonify, request
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from werkzeug.serving import make_server

from deploy import limits
from deploy.content_types import content_type_for

from . import storage
from .async_queue import DONE, FAILED, Queue, Request
from .notify import COMPLETED, FAILED as NOTIFY_FAILED, Notifier, build_message, parse_sink
from .server import Container, add_server_args, server_from_args

log = logging.getLogger("localmodes.async")

H = "X-Amzn-SageMaker-"
DEFAULT_TTL_SECONDS = 21600.0  # RequestTTLSeconds: 6 hours, range limits.ASYNC_REQUEST_TTL_RANGE
DEFAULT_TIMEOUT_SECONDS = 900.0  # InvocationTimeoutSeconds: 15 minutes, range limits.ASYNC_INVOCATION_TIMEOUT_RANGE
MAX_ATTEMPTS = 3  # tries of one request whose connection broke mid-request before it fails
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class ValidationError(ValueError):
    """A request SageMaker would refuse with 400 ValidationError."""


@dataclass(frozen=True)
class AsyncConfig:
    endpoint_url: str
    output_path: str
    failure_path: str
    max_concurrent: int = 1
    region: str = "us-east-1"


class AsyncService:
    """The queue, the dispatcher threads and the notifications; no HTTP of its own."""

    def __init__(self, config: AsyncConfig, queue: Queue, notifier: Notifier):
        limits.check_int_range("MaxConcurrentInvocationsPerInstance", config.max_concurrent,
                               *limits.ASYNC_MAX_CONCURRENT_RANGE)
        self.config = config
        self.queue = queue
        self.notifier = notifier
        self.container = Container(config.endpoint_url)
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._workers: list[threading.Thread] = []

    # ---- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        requeued = self.queue.requeue_running()
        if requeued:
            log.info("re-queued %d request(s) that were running when the service last stopped", requeued)
        for i in range(self.config.max_concurrent):
            worker = threading.Thread(target=self._work, name=f"async-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking requests; True when every worker has exited. One still running after
        ``timeout`` leaves its row ``running``: it is re-queued at the next start."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in self._workers)

    # ---- requests ---------------------------------------------------------------

    def submit(self, endpoint_name: str, headers) -> Request:
        """Validate and queue one InvokeEndpointAsync request (headers as the API takes them)."""
        input_location = headers.get(H + "InputLocation")
        if not input_location:
            raise ValidationError("X-Amzn-SageMaker-InputLocation is required")
        inference_id = headers.get(H + "Inference-Id") or str(uuid.uuid4())
        if not _SAFE_ID.match(inference_id):
            raise ValidationError("InferenceId must be 1-64 characters of letters, digits and . _ : - "
                                  "(it names the output object)")
        ttl = _number(headers, "RequestTTLSeconds", DEFAULT_TTL_SECONDS, *limits.ASYNC_REQUEST_TTL_RANGE)
        timeout = _number(headers, "InvocationTimeoutSeconds", DEFAULT_TIMEOUT_SECONDS,
                          *limits.ASYNC_INVOCATION_TIMEOUT_RANGE)
        req = self.queue.enqueue(
            inference_id=inference_id, endpoint_name=endpoint_name, input_location=input_location,
            content_type=headers.get(H + "Content-Type"), accept=headers.get(H + "Accept"),
            custom_attributes=headers.get(H + "Custom-Attributes"),
            output_location=storage.join(self.config.output_path, f"{inference_id}.out"),
            failure_location=storage.join(self.config.failure_path, f"{inference_id}-error.out"),
            ttl_seconds=ttl, timeout_seconds=timeout)
        with self._wake:
            self._wake.notify()
        return req

    def metrics(self) -> dict:
        """The CloudWatch metrics SageMaker publishes for async endpoints, from this queue.

        ApproximateBacklogSize counts requests queued or being processed, as
        SageMaker's does. One local server is one instance; when it does not
        answer /ping there is no capacity.
        """
        counts = self.queue.counts()
        backlog = self.queue.backlog()
        instances = 1 if self.container.ping(timeout=2) else 0
        oldest = self.queue.oldest_pending_time()
        return {
            "ApproximateBacklogSize": backlog,
            "ApproximateBacklogSizePerInstance": backlog / instances if instances else float(backlog),
            "ApproximateAgeOfOldestRequest": round(time.time() - oldest, 3) if oldest else 0.0,
            "HasBacklogWithoutCapacity": int(backlog > 0 and instances == 0),
            "InstanceCount": instances,
            "MaxConcurrentInvocationsPerInstance": self.config.max_concurrent,
            "Requests": counts,
        }

    # ---- dispatch ---------------------------------------------------------------

    def _work(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            req = self.queue.claim_next()
            if req is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            try:
                self._process(session, req)
            except Exception as e:
                if self._stop.is_set() or isinstance(e, sqlite3.Error):
                    # Shutting down (the queue may be closed under us) or the queue itself failed: the
                    # request's fate is unknown, so leave its row; requeue_running sends it again at the
                    # next start (at-least-once) rather than failing a request that may have succeeded.
                    log.warning("%s left for the next start (%s: %s)", req.inference_id, type(e).__name__, e)
                    if self._stop.is_set():
                        return
                    continue
                # e.g. the output location is not writable: fail it, keep the worker
                log.exception("processing %s failed", req.inference_id)
                reason = f"InternalFailure: the local async service could not complete the request: {e}"
                try:
                    self._fail(req, reason)
                except Exception:  # not even the failure location is writable
                    log.exception("could not record the failure of %s", req.inference_id)
                    self.queue.finish(req.seq, FAILED, reason)

    def _process(self, session: requests.Session, req: Request) -> None:
        if time.time() - req.received_time > req.ttl_seconds:
            self._fail(req, f"ClientError: the request expired after RequestTTLSeconds={req.ttl_seconds:g} in the queue")
            return
        content_type = req.content_type or content_type_for(req.input_location)
        try:
            with storage.local_copy(req.input_location) as path:
                response = self.container.invoke(session, path, content_type, req.accept or "*/*",
                                                 req.custom_attributes, timeout=req.timeout_seconds)
        except requests.ReadTimeout:
            self._fail(req, f"ModelError: no response from the model within "
                            f"InvocationTimeoutSeconds={req.timeout_seconds:g}")
            return
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            if never_connected(e):
                # No instance to take it: it waits, like a request on an endpoint scaled to zero.
                log.warning("server %s unreachable; %s stays queued", self.config.endpoint_url, req.inference_id)
                self.queue.release(req.seq)
                self._stop.wait(2.0)
                return
            # The connection opened, then broke: the worker died mid-request (timeout, out of
            # memory, crash) or its answer was cut off. Another try may succeed; endless ones block the queue.
            reason = (f"ModelError: the connection to the model server broke during the request "
                      f"(attempt {req.attempts} of {MAX_ATTEMPTS}): {type(e).__name__}: {e}")
            if req.attempts >= MAX_ATTEMPTS:
                self._fail(req, reason)
            else:
                log.warning("%s; %s goes back to the queue", reason, req.inference_id)
                self.queue.release(req.seq, count_attempt=True)
            return
        except requests.RequestException as e:
            self._fail(req, f"InternalFailure: the request to the model server failed: {type(e).__name__}: {e}")
            return
        except Exception as e:  # the input could not be read (missing object, S3 error...)
            if self._stop.is_set() or isinstance(e, sqlite3.Error):
                raise
            self._fail(req, f"ClientError: could not read the input {req.input_location}: {e}")
            return
        self._finish(req, response)

    def _finish(self, req: Request, response: requests.Response) -> None:
        """Write the output or the failure, notify, then mark the row -- in that order, so a
        crash in between repeats work (at-least-once) instead of losing it."""
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        if response.ok:
            storage.write_bytes(req.output_location, response.content, content_type)
            self.notifier.send(build_message(req, COMPLETED, self.config.region, time.time(),
                                             content_type, len(response.content)))
            self.queue.finish(req.seq, DONE)
            log.info("%s done -> %s", req.inference_id, req.output_location)
            return
        kind = "client" if response.status_code < 500 else "server"
        reason = (f"ClientError: Received {kind} error ({response.status_code}) from model with message "
                  f"\"{response.text[:500].strip()}\".")
        storage.write_bytes(req.failure_location, response.content, content_type)
        self.notifier.send(build_message(req, NOTIFY_FAILED, self.config.region, time.time(),
                                         content_type, len(response.content), reason))
        self.queue.finish(req.seq, FAILED, reason)
        log.info("%s failed (%d) -> %s", req.inference_id, response.status_code, req.failure_location)

    def _fail(self, req: Request, reason: str) -> None:
        """A failure without a model answer: the reason is the failure object's body."""
        storage.write_bytes(req.failure_location, json.dumps({"error": reason}).encode(), "application/json")
        self.notifier.send(build_message(req, NOTIFY_FAILED, self.config.region, time.time(),
                                         failure_reason=reason))
        self.queue.finish(req.seq, FAILED, reason)
        log.info("%s failed: %s", req.inference_id, reason)


def never_connected(error: BaseException) -> bool:
    """Whether a requests error means the connection was never opened (refused, nothing
    listening, connect timeout) rather than broken once the request was under way."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError)):
            return True
        if isinstance(e, BaseException):
            # requests wraps urllib3's MaxRetryError, whose ``reason`` is the underlying error
            pending += [e.__cause__, e.__context__, getattr(e, "reason", None)]
            pending += [a for a in e.args if isinstance(a, BaseException)]
    return False


def _number(headers, name: str, default: float, low: float, high: float) -> float:
    raw = headers.get(H + name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low:g} and {high:g}")
    return value


# ---- HTTP -------------------------------------------------------------------------------

def create_app(service: AsyncService) -> Flask:
    app = Flask("localmodes.async_endpoint")

    @app.post("/endpoints/<name>/async-invocations")
    def invoke_async(name: str):
        try:
            req = service.submit(name, request.headers)
        except ValidationError as e:
            # the runtime API's error form, so boto3 raises ClientError(ValidationError)
            return jsonify(message=str(e)), 400, {"x-amzn-ErrorType": "ValidationError"}
        body = {"InferenceId": req.inference_id, "OutputLocation": req.output_location,
                "FailureLocation": req.failure_location}
        return jsonify(body), 202, {H + "OutputLocation": req.output_location,
                                    H + "FailureLocation": req.failure_location}

    @app.get("/endpoints/<name>/async-invocations/<inference_id>")
    def status(name: str, inference_id: str):
        """Not a SageMaker API (there you watch S3 or SNS): a convenience for clients and tests."""
        req = service.queue.latest(inference_id)
        if req is None:
            return jsonify(message=f"no request {inference_id}"), 404
        return jsonify(InferenceId=req.inference_id, Status=req.state, OutputLocation=req.output_location,
                       FailureLocation=req.failure_location, FailureReason=req.failure_reason,
                       Attempts=req.attempts)

    @app.get("/metrics")
    def metrics():
        return jsonify(service.metrics())

    @app.get("/ping")
    def ping():
        return "", 200

    return app


def _log_backlog(service: AsyncService, stop: threading.Event, interval: float) -> None:
    last = None
    while not stop.wait(interval):
        backlog = service.queue.backlog()
        if backlog != last:
            log.info("ApproximateBacklogSize=%d", backlog)
            last = backlog


def serve(config: AsyncConfig, db: str, notify: list[str], host: str, port: int,
          metrics_interval: float = 5.0) -> None:
    """Run the service until SIGTERM or Ctrl-C."""
    notifier = Notifier([parse_sink(spec, config.region) for spec in notify])
    service = AsyncService(config, Queue(db), notifier)
    http = make_server(host, port, create_app(service), threaded=True)
    stop = threading.Event()
    service.start()
    threading.Thread(target=_log_backlog, args=(service, stop, metrics_interval), daemon=True).start()

    def shut_down(*_):
        stop.set()
        threading.Thread(target=http.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    log.info("async endpoint listening on http://%s:%d (server %s, MaxConcurrentInvocationsPerInstance=%d, "
             "queue %s)", host, http.server_port, config.endpoint_url, config.max_concurrent, db)
    try:
        http.serve_forever()
    finally:
        if service.stop():
            service.queue.close()
        else:  # a worker is still in a request: closing under it would turn its end into a failure
            log.warning("a request is still running; it is re-queued at the next start")


# ---- client -------------------------------------------------------------------------------

def invoke(service_url: str, input_location: str, endpoint_name: str = "local", inference_id: Optional[str] = None,
           content_type: Optional[str] = None, accept: Optional[str] = None,
           custom_attributes: Optional[str] = None) -> dict:
    """One InvokeEndpointAsync call; returns {"InferenceId", "OutputLocation", "FailureLocation"}."""
    headers = {H + "InputLocation": input_location}
    for name, value in (("Inference-Id", inference_id), ("Content-Type", content_type), ("Accept", accept),
                        ("Custom-Attributes", custom_attributes)):
        if value:
            headers[H + name] = value
    response = requests.post(f"{service_url.rstrip('/')}/endpoints/{endpoint_name}/async-invocations",
                             headers=headers, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text.strip()}")
    return response.json()


def wait_for(service_url: str, inference_id: str, endpoint_name: str = "local", timeout: float = 3600.0,
             poll: float = 0.5) -> dict:
    """Poll the local status route until the request is done or failed."""
    deadline = time.monotonic() + timeout
    url = f"{service_url.rstrip('/')}/endpoints/{endpoint_name}/async-invocations/{inference_id}"
    while time.monotonic() < deadline:
        status = requests.get(url, timeout=30).json()
        if status.get("Status") in (DONE, FAILED):
            return status
        time.sleep(poll)
    raise TimeoutError(f"{inference_id} not finished within {timeout:.0f} s")


def _client_main(args) -> int:
    input_location = args.input
    if not storage.is_s3(input_location) and "://" not in input_location:
        input_location = os.path.abspath(input_location)  # the service may run in another directory
    result = invoke(args.service, input_location, args.endpoint_name, args.inference_id, args.content_type,
                    args.accept, args.custom_attributes)
    print(json.dumps(result, indent=2))
    if not args.wait:
        return 0
    status = wait_for(args.service, result["InferenceId"], args.endpoint_name, args.timeout)
    if status["Status"] == DONE:
        sys.stdout.write(storage.read_bytes(status["OutputLocation"]).decode("utf-8", "replace") + "\n")
        return 0
    print(f"failed: {status['FailureReason']}", file=sys.stderr)
    return 1


# ---- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localmodes.async_endpoint",
                                description="A local SageMaker asynchronous endpoint, and its client.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the async endpoint service")
    add_server_args(s)
    s.add_argument("--output", required=True, help="S3OutputPath: folder, file:// or s3:// prefix")
    s.add_argument("--failure", required=True, help="S3FailurePath: folder, file:// or s3:// prefix")
    s.add_argument("--max-concurrent", type=int, default=1, help="MaxConcurrentInvocationsPerInstance, %d-%d (default 1)" % limits.ASYNC_MAX_CONCURRENT_RANGE)
    s.add_argument("--db", default="async-queue.sqlite", help="the sqlite queue file (kept across restarts)")
    s.add_argument("--notify", action="append", default=[],
                   help="file:PATH | http://URL | sns:SUCCESS_ARN,ERROR_ARN (repeatable)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8081)
    s.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                   help="awsRegion in notifications")
    s.add_argument("--metrics-interval", type=float, default=5.0, help="seconds between backlog log checks")

    c = sub.add_parser("invoke", help="InvokeEndpointAsync against a running service")
    c.add_argument("--service", default="http://127.0.0.1:8081", help="the async service's URL")
    c.add_argument("--input", required=True, help="InputLocation: a file path, file:// or s3:// URI")
    c.add_argument("--endpoint-name", default="local")
    c.add_argument("--inference-id")
    c.add_argument("--content-type")
    c.add_argument("--accept")
    c.add_argument("--custom-attributes")
    c.add_argument("--wait", action="store_true", help="wait for the result and print it")
    c.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per poll drowns the queue's own log
    if args.command == "invoke":
        try:
            return _client_main(args)
        except (RuntimeError, TimeoutError, requests.RequestException) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    low, high = limits.ASYNC_MAX_CONCURRENT_RANGE
    if not low <= args.max_concurrent <= high:
        print(f"error: --max-concurrent (MaxConcurrentInvocationsPerInstance) must be between {low} and {high}",
              file=sys.stderr)
        return 2
    with server_from_args(args) as endpoint:
        config = AsyncConfig(endpoint, args.output, args.failure, args.max_concurrent, args.region)
        serve(config, args.db, args.notify, args.host, args.port, args.metrics_interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
