"""Errors that map to HTTP status codes.

Every error the server answers with is one of these; anything else is a 500
with a request id. The type names appear verbatim in the JSON error body
``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations


class WhisperServeError(Exception):
    """Base class: an error with a status code and a user-facing message."""

    status_code = 500
    error_type = "InternalError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidParameterError(WhisperServeError):
    """A parameter is malformed, out of range or unknown (400)."""

    status_code = 400
    error_type = "InvalidParameter"


class UnsupportedOptionError(InvalidParameterError):
    """An option the chosen backend or model cannot honour (400).

    The message always names the option and the backend, so a user knows
    whether to drop the option or switch backends.
    """

    error_type = "UnsupportedOption"


class InvalidRequestError(WhisperServeError):
    """The request body is malformed (bad JSON, missing file field...) (400)."""

    status_code = 400
    error_type = "InvalidRequest"


class NotAcceptableError(WhisperServeError):
    """The Accept header asks for a format we cannot produce (406)."""

    status_code = 406
    error_type = "NotAcceptable"


class PayloadTooLargeError(WhisperServeError):
    """The body exceeds a cap an operator configured (413). No cap by default."""

    status_code = 413
    error_type = "PayloadTooLarge"


class AudioDecodeError(WhisperServeError):
    """ffmpeg could not decode the body as audio (415); carries ffmpeg's reason."""

    status_code = 415
    error_type = "UnsupportedMediaType"


class ArtifactError(WhisperServeError):
    """A model directory is missing files or holds something unexpected.

    Raised at load time, so the container fails to start (and /ping never
    turns healthy) with a message naming the file.
    """

    status_code = 500
    error_type = "ModelArtifactError"


class RequestTimeoutError(WhisperServeError):
    """The request waited or ran longer than SAGEMAKER_MODEL_SERVER_TIMEOUT (504)."""

    status_code = 504
    error_type = "Timeout"


class ModelNotReadyError(WhisperServeError):
    """The model is still loading (503)."""

    status_code = 503
    error_type = "ModelNotReady"
