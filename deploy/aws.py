"""The only module that talks to AWS: a thin executor plus polling waiters.

Why so thin: requests are built (and validated) elsewhere; this either prints them
(``--dry-run``, no client is even created, so no credentials are needed) or sends
them with boto3. Clients honour AWS_ENDPOINT_URL natively, which is how the tests
point everything at a local moto server. Tests that need states moto cannot
produce inject Stubber-wrapped clients through ``clients``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Iterable, Optional, TextIO

from botocore import xform_name
from botocore.exceptions import ClientError

from .requests import Request

# Error codes that mean "already gone" for the delete/deregister calls of cleanup.
MISSING_CODES = {"ResourceNotFound", "ResourceNotFoundException", "ObjectNotFoundException",
                 "NoSuchKey", "NoSuchBucket", "404", "NotFound", "RepositoryNotFoundException"}
# SageMaker reports a missing endpoint/config/model as a ValidationException.
MISSING_PHRASES = ("could not find", "does not exist", "not found", "no scalable target")


class WaitError(RuntimeError):
    """A resource reached a failure state, or did not finish in time."""


class PartialFailure(RuntimeError):
    """A batch call (DeleteObjects) succeeded for some items and failed for others."""


def is_missing(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "").lower()
    return code in MISSING_CODES or (code == "ValidationException" and any(p in message for p in MISSING_PHRASES))


def _printable(value: Any) -> Any:
    """JSON view of params: request bodies are shown by size, not dumped."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


class Executor:
    """Sends or prints :class:`Request` objects.

    ``dry_run``: print one JSON line per request to ``out`` and return ``{}``.
    ``clients``: service name -> ready client (tests with botocore's Stubber).
    ``sleep``: injectable so waiter tests do not wait in real time.
    """

    def __init__(self, region: Optional[str] = None, dry_run: bool = False, out: Optional[TextIO] = None,
                 clients: Optional[dict] = None, sleep: Callable[[float], None] = time.sleep):
        self.region = region
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.sleep = sleep
        self._clients: dict = dict(clients or {})

    def client(self, service: str):
        if service not in self._clients:
            import boto3  # deferred: --dry-run and --help never need it

            self._clients[service] = boto3.client(service, region_name=self.region)
        return self._clients[service]

    def resolved_region(self) -> str:
        """The region calls go to: ``region``, else boto3's own lookup (env, profile); no call is made."""
        if self.region:
            return self.region
        import boto3

        return boto3.session.Session().region_name or "<REGION>"

    def call(self, request: Request, missing_ok: bool = False) -> dict:
        """Send one request. ``missing_ok``: a not-found error returns ``{}`` (idempotent deletes)."""
        if self.dry_run:
            line = {"service": request.service, "operation": request.operation,
                    "params": _printable(request.params)}
            print(json.dumps(line), file=self.out)
            return {}
        method = getattr(self.client(request.service), xform_name(request.operation))
        try:
            return method(**request.params) or {}
        except ClientError as error:
            if missing_ok and is_missing(error):
                return {}
            raise

    def exists(self, request: Request) -> Optional[dict]:
        """Describe something; None when it does not exist (and always in a dry run)."""
        if self.dry_run:
            return None
        try:
            return self.call(request)
        except ClientError as error:
            if is_missing(error):
                return None
            raise

    def paginate_keys(self, build: Callable[[Optional[str]], Request],
                      missing_ok: bool = False) -> Iterable[tuple[str, int]]:
        """(key, size) of every object under a ListObjectsV2 request, page by page."""
        token = None
        while True:
            page = self.call(build(token), missing_ok=missing_ok)
            for item in page.get("Contents", []):
                yield item["Key"], item.get("Size", 0)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


def wait_for_status(executor: Executor, describe: Request, status_field: str, done: set[str],
                    failed: set[str], *, poll_s: float, timeout_s: float,
                    log: Callable[[str], None] = lambda message: None,
                    accept: Optional[Callable[[dict], bool]] = None) -> dict:
    """Poll ``describe`` until ``status_field`` is in ``done``; raise on ``failed`` or timeout.

    ``accept``: a further check of a description whose status is in ``done``;
    while it returns False polling goes on (it may raise WaitError itself).

    Our own loop rather than boto3's waiters: those have fixed delays (30 s x 120 for
    endpoints), no FailureReason in their error, and no hook to make tests instant.
    """
    if executor.dry_run:
        log(f"(dry run: would wait for {status_field} in {sorted(done)})")
        return {}
    start, waited, last = time.monotonic(), 0.0, None
    while True:
        description = executor.call(describe)
        status = description.get(status_field)
        if status != last:
            log(f"{status_field}: {status}")
            last = status
        if status in done and (accept is None or accept(description)):
            return description
        if status in failed:
            reason = description.get("FailureReason", "no FailureReason given")
            raise WaitError(f"{describe.operation} reports {status_field}={status}: {reason}")
        # Count the sleeps too, so a test's instant sleep still reaches the timeout.
        if max(time.monotonic() - start, waited) >= timeout_s:
            raise WaitError(f"{describe.operation}: {status_field} still {status} after {timeout_s:.0f} s")
        executor.sleep(poll_s)
        waited += poll_s
