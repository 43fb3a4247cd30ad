"""The EMF outlet: lines by AWS's own serializer, within the specification's limits, and nothing ever connects out.

``aws-embedded-metrics`` guesses its environment by probing the instance
metadata address (169.254.169.254) unless ``AWS_EMF_ENVIRONMENT`` is set. A
child interpreter with a socket tripwire (an audit hook that records and
refuses every connect and name lookup) shows that starting the metrics and
writing lines never reaches for the network, and that the tripwire does see
the library's own probe when it is let run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from aws_embedded_metrics.serializers.log_serializer import LogSerializer

from serve.metrics.emf import Dimensions, EmfOutlet, lines_log
from serve.metrics.record import RequestDone, Sample

ROOT = Path(__file__).resolve().parents[2]

TRIPWIRE = textwrap.dedent("""
    import sys
    touched = []

    def tripwire(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
            touched.append((event, repr(args)[:120]))
            raise ConnectionRefusedError("tripwire: " + event)  # refused before anything leaves the process

    sys.addaudithook(tripwire)
""")


def child(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_EMF", "PROMETHEUS_MULTIPROC"))}
    out = subprocess.run([sys.executable, "-c", TRIPWIRE + textwrap.dedent(code)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_starting_the_metrics_and_writing_lines_never_connects_out():
    result = child("""
        import json, os
        from serve import metrics
        from serve.metrics import record
        m = metrics.start(metrics.MetricsConfig(interval_s=0.05), lambda: ("ctranslate2", "tiny.en"))
        record.request(record.RequestDone("/invocations", 200, "", 1.5, 0.5, 3.0, 0.5))
        record.engine_call(4, 0.25)
        record.decoded(0.01)
        record.live_refused()
        assert m.emf.flush()
        import time; time.sleep(0.2)  # a few gauge lines from the sampler
        assert m.emf.flush()
        print(json.dumps({"touched": touched, "env": os.environ.get("AWS_EMF_ENVIRONMENT")}))
    """)
    assert result == {"touched": [], "env": "Local"}


def test_the_tripwire_sees_the_librarys_own_environment_probe():
    """The control: with the variable unset, the library's detection reaches for the metadata address."""
    result = child("""
        import asyncio, json
        from aws_embedded_metrics.environment.environment_detector import resolve_environment
        asyncio.run(resolve_environment())
        print(json.dumps({"touched": touched}))
    """)
    assert result["touched"], "the library probed nothing: this tripwire would prove nothing"


def outlet() -> EmfOutlet:
    return EmfOutlet(Dimensions("NS", "ep", "AllTraffic"), lambda: ("ctranslate2", "tiny.en"))


def test_a_request_line_carries_its_numbers_and_its_cancel_reason():
    emf = outlet()
    try:
        timed_out = json.loads(LogSerializer.serialize(emf.request_context(
            RequestDone("/invocations", 504, "Timeout", 3600.0)))[0])
        left = json.loads(LogSerializer.serialize(emf.request_context(
            RequestDone("/v1/audio/transcriptions", 499, "", 2.0, 0.4)))[0])
    finally:
        emf.stop()
    assert timed_out["RequestsTimedOut"] == 1 and "RequestsCancelled" not in timed_out
    assert timed_out["RequestLatency"] == 3600.0 and timed_out["status"] == 504
    assert left["RequestsCancelled"] == 1 and left["TimeToFirstSegment"] == 0.4
    dims = left["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert dims == [["EndpointName", "VariantName"], ["EndpointName", "VariantName", "Backend", "Model"]]
    assert left["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "NS" and left["Model"] == "tiny.en"


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, r: logging.LogRecord) -> None:
        self.lines.append(json.loads(r.getMessage()))


def test_gathered_values_go_in_lines_of_at_most_100_and_none_is_lost():
    emf = outlet()
    written = Lines()
    lines_log.addHandler(written)
    try:
        for k in range(250):  # in the writer's place: at 100 gathered, a line goes at once
            emf._handle(("gather", "BatchSize", k % 8 + 1, "EngineCallLatency", 0.5))
        emf._handle(("sample", Sample(2, 60.0, 1, 1 << 30, None)))  # the rest, with the sample
    finally:
        lines_log.removeHandler(written)
        emf.stop()
    values = [v for ln in written.lines for v in (ln["BatchSize"] if isinstance(ln["BatchSize"], list)
                                                  else [ln["BatchSize"]])]
    assert values == [k % 8 + 1 for k in range(250)]
    assert len(written.lines) == 3 and all(len(ln["BatchSize"]) <= 100 for ln in written.lines)
    last = written.lines[-1]
    assert last["QueuedWindows"] == 2 and last["WorkerMemory"] == 1 << 30 and "GPUMemory" not in last
