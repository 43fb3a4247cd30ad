"""Runs in .venv-pyannote (pyannote.audio lives there, not in .venv): the engine on a real pipeline folder.

``python -m tests.diarization.pyannote_wiring FOLDER AUDIO.npy CASES.json`` prints one
JSON object: for each case ({"num", "low", "high", "piece"}), the turns of a stream
fed the audio in pieces of ``piece`` samples; and what the process saw: telemetry's
switch, connections attempted (every one is refused: nothing may leave the machine),
the device of the pipeline's weights, and whether every stream used one pipeline.
tests/diarization/test_pyannote.py asserts on it.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np

ATTEMPTS: list[str] = []


def _refuse(self, address, *args, **kwargs):
    ATTEMPTS.append(repr(address))
    raise OSError(f"the pyannote wiring test allows no connection ({address!r})")


def main(folder: Path, audio: Path, cases: list[dict]) -> dict:
    socket.socket.connect = _refuse  # hub downloads and telemetry exports would go through here
    socket.socket.connect_ex = _refuse

    from serve.diarization.engine import SpeakerCounts
    from serve.diarization.pyannote_engine import PyannoteEngine, pyannote_unavailable

    unavailable = pyannote_unavailable(folder)
    engine = PyannoteEngine(folder, "cpu")
    samples = np.load(audio)
    out = {"unavailable": unavailable, "cases": []}
    pipelines = set()
    for case in cases:
        stream = engine.stream(SpeakerCounts(case.get("num"), case.get("low"), case.get("high")))
        pipelines.add(id(stream._pipeline))
        piece = case.get("piece", len(samples))
        for at in range(0, len(samples), piece):
            stream.feed(samples[at:at + piece])
        out["cases"].append({"case": case, "turns": [[t.start, t.end, t.speaker] for t in stream.finish()]})
    empty = engine.stream(SpeakerCounts())
    out["empty"] = empty.finish()

    import os

    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    pipeline = engine.pipeline()
    out.update(metrics_env=os.environ.get("PYANNOTE_METRICS_ENABLED"), metrics_enabled=is_metrics_enabled(),
               attempts=ATTEMPTS, one_pipeline=len(pipelines) == 1 and id(pipeline) in pipelines,
               devices=sorted({str(p.device) for model in (pipeline._segmentation.model,
                                                            pipeline._embedding.model_)
                               for p in model.parameters()}),
               embedding_class=type(pipeline._embedding.model_).__name__)
    return out


if __name__ == "__main__":
    import torch

    torch.set_num_threads(2)  # the suite shares a small machine
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))))
