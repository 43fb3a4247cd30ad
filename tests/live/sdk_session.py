"""One live session through AWS's SDK and the stand-in router, printed as JSON (test_sagemaker_sdk.py reads it).

Runs in .venv-sdk (``make sdk-env``: Python 3.12, the SDK, the router's packages):

    .venv-sdk/bin/python -m tests.live.sdk_session ws://127.0.0.1:8080 sagemaker audio.s16le workdir [region]

``serve.live.client.stream_sagemaker_endpoint`` streams the 16 kHz PCM16 file as fast as it goes to the router
(tests/live/sagemaker_router.py), which relays it to the container at the given address; ``region``, if
given, is the one the SDK signs for (the router expects its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from serve.live.client import LiveError, stream_sagemaker_endpoint
from tests.live.sagemaker_router import Router

# Signed, never checked: fixed keys, and nothing else the SDK's chain could find (files, the instance's role).
STAND_IN_ENV = {"AWS_ACCESS_KEY_ID": "AKIASTANDINROUTER000", "AWS_SECRET_ACCESS_KEY": "stand-in-secret",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}


def main(container: str, door: str, audio: str, workdir: str, region: str = "") -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(STAND_IN_ENV)
    samples = np.fromfile(audio, "<i2")
    error, result = None, None
    with Router(container, Path(workdir)) as router:
        try:
            result = stream_sagemaker_endpoint("whisper-live", region or router.region, samples, door=door,
                                               realtime=False, endpoint_uri=router.url, ca_file=router.ca_file)
        except LiveError as e:
            error, result = f"{type(e).__name__}: {e}", e.result
    print(json.dumps({"error": error, "result": dataclasses.asdict(result) if result else None,
                      "invocations": [dataclasses.asdict(call) for call in router.invocations],
                      "refusals": router.refusals}))


if __name__ == "__main__":
    main(*sys.argv[1:])
