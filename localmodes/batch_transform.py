"""Local batch transform: what a SageMaker transform job does, against a local server.

    python -m localmodes.batch_transform --input DIR|s3://... --output DIR|s3://... \\
        [--endpoint http://127.0.0.1:8080 | --start-server --backend ctranslate2] --accept text/plain

Like a transform job with ``SplitType=None`` and ``BatchStrategy=SingleRecord``:

* waits for ``GET /ping``, then reads ``GET /execution-parameters``
  (``--max-concurrent-transforms`` / ``--max-payload-mb`` override it, as the
  CreateTransformJob fields do);
* sends every object under the input prefix as one ``POST /invocations``, with
  its content type and the chosen Accept, keeping MaxConcurrentTransforms in flight;
* writes ``<output>/<relative key>.out`` for each success, keeping the input's
  relative path;
* retries a failing invocation up to ``InvocationsMaxRetries`` times (0-3,
  default 3, the API's range and default);
* on any failure, lists the failed objects and exits 1, keeping the other outputs.

Which failures are retried: the API reference only says "when invocation
requests are failing". We retry what can succeed on a second try -- connection
errors, timeouts, 429 and 5xx -- and treat any other 4xx (415 for a corrupt
file, 400 for a bad parameter) as final, because the same bytes will get the
same answer and a retry only triples the time to report it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Optional

import requests
from tqdm import tqdm

from deploy import limits
from deploy.content_types import content_type_for

from . import storage
from .server import Container, ExecutionParameters, add_server_args, server_from_args

MB = 1024 * 1024


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class Outcome:
    """What happened to one input object."""

    obj: storage.StoredObject
    output_uri: Optional[str] = None
    error: Optional[str] = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchReport:
    parameters: ExecutionParameters
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        lines = [f"{len(self.succeeded)} of {len(self.outcomes)} objects transformed in {self.seconds:.1f} s "
                 f"(MaxConcurrentTransforms={self.parameters.max_concurrent_transforms})"]
        if self.failed:
            lines.append(f"{len(self.failed)} failed:")
            lines += [f"  {o.obj.uri}: {o.error}" for o in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class JobConfig:
    """The transform-job fields that shape each invocation."""

    accept: str = "application/json"
    content_type: str = "auto"
    custom_attributes: Optional[str] = None
    max_retries: int = 3
    invocation_timeout: float = 600.0
    retry_delay: float = 1.0
    """Seconds before the first retry, doubled each time (tests make it small)."""


def transform(endpoint: str, input_uri: str, output_uri: str, config: JobConfig = JobConfig(),
              max_concurrent: Optional[int] = None, max_payload_mb: Optional[int] = None,
              progress: bool = True, ping_timeout: float = 600.0) -> BatchReport:
    """Run one transform job over every object under ``input_uri``."""
    low, high = limits.INVOCATIONS_RETRIES_RANGE
    if not low <= config.max_retries <= high:
        raise ValueError(f"InvocationsMaxRetries must be between {low} and {high}, as in ModelClientConfig")
    container = Container(endpoint)
    container.wait_until_healthy(ping_timeout)
    params = container.execution_parameters() or ExecutionParameters()
    params = ExecutionParameters(max_concurrent or params.max_concurrent_transforms, params.batch_strategy,
                                 max_payload_mb or params.max_payload_mb)
    objects = storage.list_objects(input_uri)
    if not objects:
        raise FileNotFoundError(f"no objects found under {input_uri}")

    report = BatchReport(params)
    local = threading.local()

    def run(obj: storage.StoredObject) -> Outcome:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return _transform_one(container, local.session, obj, output_uri, config, params)

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=params.max_concurrent_transforms)
    try:
        with tqdm(total=len(objects), unit="file", disable=not progress, file=sys.stderr) as bar:
            futures = [pool.submit(run, obj) for obj in objects]
            for future in as_completed(futures):
                outcome = future.result()
                report.outcomes.append(outcome)
                bar.update(1)
                bar.set_postfix(failed=len(report.failed), refresh=False)
    except BaseException:
        # Ctrl-C (or anything else): drop the files not yet started instead of waiting for all of them;
        # the ones in flight finish (a thread cannot be interrupted) and the error goes on up.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report.seconds = time.monotonic() - start
    report.outcomes.sort(key=lambda o: o.obj.relative_key)
    return report


def _transform_one(container: Container, session: requests.Session, obj: storage.StoredObject,
                   output_prefix: str, config: JobConfig, params: ExecutionParameters) -> Outcome:
    outcome = Outcome(obj)
    start = time.monotonic()
    try:
        if obj.size > params.max_payload_mb * MB:
            outcome.error = (f"{obj.size / MB:.1f} MB is over MaxPayloadInMB={params.max_payload_mb} "
                             "(with SplitType None an object is one request)")
            return outcome
        content_type = content_type_for(obj.relative_key) if config.content_type == "auto" else config.content_type
        with storage.local_copy(obj.uri) as path:
            response, outcome.attempts, outcome.error = _invoke_with_retries(
                container, session, path, content_type, config)
        if response is not None:
            outcome.output_uri = storage.join(output_prefix, obj.relative_key + ".out")
            storage.write_bytes(outcome.output_uri, response.content, response.headers.get("Content-Type"))
    except Exception as e:  # one object's trouble (unreadable input, S3 error) must not stop the job
        outcome.error = f"{type(e).__name__}: {e}"
    finally:
        outcome.seconds = time.monotonic() - start
    return outcome


def _invoke_with_retries(container: Container, session: requests.Session, path, content_type: str,
                         config: JobConfig) -> tuple[Optional[requests.Response], int, Optional[str]]:
    """(response, attempts, None) on success, (None, attempts, reason) on failure."""
    reason = None
    for attempt in range(config.max_retries + 1):
        if attempt:
            time.sleep(config.retry_delay * 2 ** (attempt - 1))
        try:
            response = container.invoke(session, path, content_type, config.accept, config.custom_attributes,
                                        timeout=config.invocation_timeout)
        except requests.Timeout:
            reason = f"no response within InvocationsTimeoutInSeconds={config.invocation_timeout:g}"
            continue
        except requests.ConnectionError as e:
            reason = f"connection error: {e}"
            continue
        if response.ok:
            return response, attempt + 1, None
        reason = f"HTTP {response.status_code}: {_error_message(response)}"
        if not is_retryable(response.status_code):
            return None, attempt + 1, reason
    return None, config.max_retries + 1, reason


def _error_message(response: requests.Response) -> str:
    """The server's ``{"error": {"type", "message"}}``, or the start of whatever else it sent."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json()["error"]
        return f"{error['type']}: {error['message']}"
    return response.text[:300].strip()


# ---- command line ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localmodes.batch_transform",
                                description="Run a SageMaker-style batch transform job against a local server.")
    p.add_argument("--input", required=True, help="folder, file://, s3:// prefix or object")
    p.add_argument("--output", required=True, help="folder, file:// or s3:// prefix for the .out files")
    add_server_args(p)
    p.add_argument("--accept", default="application/json", choices=limits.ACCEPT_TYPES,
                   help="the transcript format (default application/json)")
    p.add_argument("--content-type", default="auto",
                   help="the ContentType of every object, or 'auto' to guess each from its extension")
    p.add_argument("--custom-attributes", help="sent as X-Amzn-SageMaker-Custom-Attributes, e.g. language=en")
    p.add_argument("--max-retries", type=int, default=limits.INVOCATIONS_RETRIES_RANGE[1],
                   choices=range(limits.INVOCATIONS_RETRIES_RANGE[0], limits.INVOCATIONS_RETRIES_RANGE[1] + 1),
                   help="InvocationsMaxRetries, %d-%d (default %d)" % (*limits.INVOCATIONS_RETRIES_RANGE,
                                                                       limits.INVOCATIONS_RETRIES_RANGE[1]))
    p.add_argument("--invocation-timeout", type=float, default=600.0,
                   help="InvocationsTimeoutInSeconds (default 600)")
    p.add_argument("--max-concurrent-transforms", type=int, help="override the server's MaxConcurrentTransforms")
    p.add_argument("--max-payload-mb", type=int, help="override the server's MaxPayloadInMB")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = JobConfig(args.accept, args.content_type, args.custom_attributes, args.max_retries,
                       args.invocation_timeout)
    server = server_from_args(args)
    try:
        with server as endpoint:
            report = transform(endpoint, args.input, args.output, config, args.max_concurrent_transforms,
                               args.max_payload_mb, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError, requests.RequestException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
