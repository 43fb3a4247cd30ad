"""Error kinds -> HTTP statuses, in one table, and the JSON body every error gets.

``{"error": {"type": ..., "message": ..., "request_id": ...}}``; anything that is not a
``WhisperServeError`` is a 500 whose message carries the request id, logged
with the traceback. werkzeug's own HTTP errors (404, 405...) keep their status.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional

from flask import Response, g
from werkzeug.exceptions import HTTPException

from .. import errors

log = logging.getLogger(__name__)

STATUS: dict[type, int] = {
    errors.InvalidParameterError: 400,  # and UnsupportedOptionError
    errors.InvalidRequestError: 400,
    errors.ModelNotFoundError: 404,
    errors.NotAcceptableError: 406,
    errors.PayloadTooLargeError: 413,
    errors.AudioDecodeError: 415,
    errors.CancelledError: 499,  # nobody is listening; logged only
    errors.ArtifactError: 500,
    errors.EngineFaultError: 500,
    errors.UpstreamError: 502,
    errors.ModelNotReadyError: 503,
    errors.ShuttingDownError: 503,
    errors.ServiceFaultError: 503,
    errors.RequestTimeoutError: 504,
}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):
        return exc.code or 500
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def error_type(exc: BaseException) -> str:
    if isinstance(exc, errors.WhisperServeError):
        return exc.error_type
    if isinstance(exc, HTTPException):
        return (exc.name or "HTTPError").replace(" ", "")
    return "InternalError"


def request_id() -> Optional[str]:
    """The request's id (``app.request_id``), also in its error answers: one request followed from client to log."""
    return g.get("request_id") if g else None


def error_message(exc: BaseException) -> str:
    if isinstance(exc, errors.WhisperServeError):
        return exc.message
    if isinstance(exc, HTTPException):
        return exc.description or exc.name
    request_id = g.get("request_id", "-")
    log.error("request %s failed: %s", request_id, exc, exc_info=exc)
    return f"internal error, request id {request_id}: search the endpoint's logs for it"


def error_response(exc: BaseException, body: Optional[Callable[[BaseException, int], dict]] = None) -> Response:
    """The JSON error answer; ``body`` (exception, status) -> the error object, for another API's shape."""
    status = status_of(exc)
    # OpenAI's shape (``body``) stays OpenAI's: its clients read the id from X-Request-Id, as from OpenAI's API
    error = body(exc, status) if body else {"type": error_type(exc), "message": error_message(exc),
                                            "request_id": request_id()}
    response = Response(json.dumps({"error": error}, ensure_ascii=False), status=status,
                        content_type="application/json")
    retry = getattr(exc, "retry_after_s", None)
    if retry:
        response.headers["Retry-After"] = str(retry)
    return response
