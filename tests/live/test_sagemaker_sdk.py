"""stream_sagemaker_endpoint run for real: AWS's SDK, a stand-in for SageMaker's router, the real server.

The SDK needs Python >= 3.12 and this suite runs on 3.11, so each session runs in .venv-sdk (``make sdk-env``)
as a subprocess (tests/live/sdk_session.py): the SDK signs and streams its HTTP/2 event stream to the router
(tests/live/sagemaker_router.py), which checks it, opens the container's WebSocket as SageMaker does, and
relays PayloadParts and frames both ways. Nothing is timed: the events and what the router relayed are read.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from serve.live.client import COMPLETED, DELTA, PATHS
from tests import speech
from tests.live.test_live_server import clips, live_server, silence  # noqa: F401 - the real server, the clips
from tests.server_harness import ROOT

SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
CLIP = {"sagemaker": 3, "openai": 2}  # a different sentence per door: each transcript must be nearest its own


def through_sdk(container: str, door: str, samples: np.ndarray, workdir, region: str = "") -> dict:
    """The session's JSON (sdk_session.py): the client's result or error, and what the router saw."""
    if not SDK_PYTHON.exists():  # a failure, not a skip: without it the SDK path is not tested at all
        pytest.fail(f"{SDK_PYTHON.parent.parent.name} is missing: run `make sdk-env` (AWS's SDK needs Python 3.12)")
    audio = workdir / "audio.s16le"
    samples.astype("<i2").tofile(audio)
    run = subprocess.run([str(SDK_PYTHON), "-m", "tests.live.sdk_session", container, door, str(audio), str(workdir),
                          region], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    # a task the client left pending, or the router's HTTP/2 server failing after the answer, only show here
    for trouble in ("Traceback", "Task was destroyed", "Exception ignored"):
        assert trouble not in run.stderr, run.stderr[-4000:]
    return json.loads(run.stdout)


@pytest.mark.parametrize("door", ["sagemaker", "openai"])
def test_a_spoken_sentence_through_the_sdk_and_the_router(live_server, clips, door, tmp_path):
    sentence, pcm = clips[CLIP[door]]
    container = live_server.url.replace("http://", "ws://")
    out = through_sdk(container, door, np.concatenate([silence(1), pcm, silence(1.5)]), tmp_path)
    assert out["error"] is None, (out["error"], out["invocations"])
    result = out["result"]
    assert result["complete"]
    events = [r["event"] for r in result["events"]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.created"
    (done,) = [e for e in events if e["type"] == COMPLETED]
    deltas = [e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == done["item_id"]]
    assert deltas and "".join(deltas) == done["transcript"]
    assert kinds.index(DELTA) < kinds.index(COMPLETED)
    assert speech.nearest(done["transcript"], [text for text, _ in clips]) == sentence, (sentence, done)

    (call,) = out["invocations"]
    assert call["endpoint"] == "whisper-live"
    assert call["container_url"] == container + PATHS[door]  # as `stream` would open it directly
    audio, commit = ("BINARY", "UTF8") if door == "sagemaker" else ("UTF8", "UTF8")
    first = ["UTF8"] if door == "openai" else []  # the openai door's session.update
    assert call["to_container"] == first + [audio] * result["frames"] + [commit]
    assert call["to_caller"] == ["UTF8"] * len(events)  # the server speaks in text frames only
    assert call["signed_events"] == len(call["to_container"]) + 1  # and the empty one that ends the stream
    assert call["ended_by"] == "caller"


def test_a_stream_signed_for_another_region_is_refused_and_said_so(tmp_path):
    """The router's checks bite, and the client turns the service's 403 into LiveRefusedError."""
    out = through_sdk("ws://127.0.0.1:9", "sagemaker", silence(0.5), tmp_path, region="eu-west-1")
    assert out["error"].startswith("LiveRefusedError: ") and "403" in out["error"], out["error"]
    assert "InvalidSignatureException" in out["error"], out["error"]
    assert out["invocations"] == [] and len(out["refusals"]) == 1, out
