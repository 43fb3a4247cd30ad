"""The errors the service reports, by kind.

Each class is a kind of failure with a message written for the caller.
Nothing here knows HTTP: ``serve.http.errors`` maps each kind to a status
code in one table, and the artifacts CLI prints the message. Anything that
is not one of these is an internal error (a 500 carrying a request id).
The class's ``error_type`` appears verbatim in JSON error bodies.
"""

from __future__ import annotations

from typing import Optional


class WhisperServeError(Exception):
    """Base class: an error with a user-facing message."""

    error_type = "InternalError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidParameterError(WhisperServeError):
    """A parameter or setting is malformed, out of range, unknown or repeated."""

    error_type = "InvalidParameter"

    def __init__(self, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.param = param
        """The parameter's name, where one is to blame (the OpenAI error shape reports it)."""


class UnsupportedOptionError(InvalidParameterError):
    """An option the chosen backend or model cannot honour.

    The message always names the option and the backend, so a user knows
    whether to drop the option or switch backends.
    """

    error_type = "UnsupportedOption"


class InvalidRequestError(WhisperServeError):
    """The request body is malformed or incomplete (bad JSON, missing file field, cut upload...)."""

    error_type = "InvalidRequest"


class ModelNotFoundError(InvalidParameterError):
    """The request names a model this server does not serve (the OpenAI door's ``model``)."""

    error_type = "ModelNotFound"


class NotAcceptableError(WhisperServeError):
    """The Accept header asks for a format we cannot produce."""

    error_type = "NotAcceptable"


class PayloadTooLargeError(WhisperServeError):
    """The body, or the audio decoded from it, exceeds a limit an operator can set."""

    error_type = "PayloadTooLarge"


class AudioDecodeError(WhisperServeError):
    """ffmpeg could not decode the body as audio; carries ffmpeg's reason."""

    error_type = "UnsupportedMediaType"


class UpstreamError(WhisperServeError):
    """A service the request depends on (S3) could not be reached or failed."""

    error_type = "UpstreamUnavailable"


class ArtifactError(WhisperServeError):
    """A model directory is missing files or holds something unexpected.

    Raised at load time, so the container fails to start (and /ping never
    turns healthy) with a message naming the file.
    """

    error_type = "ModelArtifactError"


class RequestTimeoutError(WhisperServeError):
    """The request waited or ran longer than SAGEMAKER_MODEL_SERVER_TIMEOUT."""

    error_type = "Timeout"


class ModelNotReadyError(WhisperServeError):
    """The model is still loading, or failed to load."""

    error_type = "ModelNotReady"


class ShuttingDownError(WhisperServeError):
    """The server is stopping and the request cannot finish before it does: retry elsewhere."""

    error_type = "ShuttingDown"

    retry_after_s = 5


class ServiceFaultError(WhisperServeError):
    """Our side failed, not the input: a decoder killed or unable to start, a scratch file
    that could not be written, an engine that stopped serving. Sending the same request
    again (to this instance once it recovers, or to another) can succeed: 503 + Retry-After."""

    error_type = "ServiceUnavailable"

    retry_after_s = 5


class EngineFaultError(WhisperServeError):
    """The engine raised while decoding this request's audio. Its batch mates were decoded
    again without it; only this request fails (500: the same audio would likely fail again)."""

    error_type = "EngineError"


class CancelledError(WhisperServeError):
    """The request was given up (its client went away); nobody reads this error."""

    error_type = "Cancelled"
