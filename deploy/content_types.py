"""The Content-Type sent for a file, from its extension: one table for every mode.

Pure (no AWS): ``deploy`` uses it for InvokeEndpoint / InvokeEndpointAsync and
``localmodes`` for the local batch, async and real-time modes, so a file gets the
same Content-Type wherever it is sent.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePath

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Audio types mimetypes does not know everywhere; the container decodes any of them with ffmpeg.
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".m4a": "audio/mp4",
               ".ogg": "audio/ogg", ".opus": "audio/ogg", ".webm": "audio/webm", ".aac": "audio/aac",
               ".mp4": "video/mp4", ".json": "application/json"}


def content_type_for(name: str) -> str:
    """The MIME type of a file name, path or URI from its extension (octet-stream when unknown)."""
    suffix = PurePath(str(name)).suffix.lower()
    return AUDIO_TYPES.get(suffix) or mimetypes.guess_type(str(name))[0] or DEFAULT_CONTENT_TYPE
