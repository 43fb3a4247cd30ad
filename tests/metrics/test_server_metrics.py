"""The real server's metrics after a known sequence of requests: GET /metrics and the EMF lines say the same.

One server of two workers (so that the figures of both must be summed),
batches of at most 2 windows, JSON bodies over 10 kB refused (413), one
live session a worker, a gauge line every second. The sequence, once for
the module (``run``): two whole answers, a 400, a 413, a streamed answer,
one whose client leaves mid-stream (499), eight at once (the queue is
watched meanwhile), and three live sessions for two places.

Every figure is checked against what the test itself knows (the statuses
it got) and the server's own JSON log line of each request: counts exactly,
histogram sums to the millisecond the log line rounds to.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import speech
from tests.server_harness import ServerHandle, running_server

STREAM = {"X-Amzn-SageMaker-Custom-Attributes": "stream=true"}
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
ENV = {
    "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
    "WHISPER_MAX_BATCH": "2",
    "WHISPER_MAX_JSON_MB": "0.01",
    "WHISPER_MAX_LIVE_SESSIONS": "1",
    "WHISPER_METRICS_INTERVAL_S": "1",
    "WHISPER_METRICS_NAMESPACE": "WhisperTest",
    "WHISPER_METRICS_ENDPOINT": "test-endpoint",
    "WHISPER_METRICS_VARIANT": "blue",
}
CONCURRENT = 8
LIVE_TRIES = 3


def scrape(server: ServerHandle) -> dict[tuple, float]:
    """GET /metrics, parsed by prometheus_client's own parser: (sample name, sorted labels) -> value."""
    r = requests.get(server.url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def total(m: dict, name: str, **labels) -> float:
    """Summed over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in m.items() if n == name and set(labels.items()) <= set(ls))


def events(server: ServerHandle) -> list[dict]:
    """The server's JSON lines: each request's own line, and the EMF lines (with ``_aws``)."""
    return [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{")]


def request_line(server: ServerHandle, request_id: str, attempts: int = 1200) -> dict:
    for _ in range(attempts):
        found = [e for e in events(server) if e.get("request_id") == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no log line for {request_id}:\n{server.log_tail()}")


@dataclass
class Run:
    server: ServerHandle
    before: dict
    after: dict = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    """request id -> the status the client saw (499: the client left)."""
    answers: dict[str, object] = field(default_factory=dict)
    most_queued: tuple[float, float] = (0.0, 0.0)
    live_open_seen: float = -1.0
    live_admitted: int = 0


def _post(server, body: bytes, headers: dict, **kw) -> requests.Response:
    return requests.post(server.url + "/invocations", data=body, headers=headers, timeout=600, **kw)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    clips = speech.corpus(CONCURRENT + 3)
    long = speech.long_clip(10)
    with running_server("ctranslate2", env=ENV) as server:
        result = Run(server, scrape(server))
        wav = {"Content-Type": "audio/wav"}

        for i, clip in enumerate(clips[:2]):  # two whole answers, the first named by the caller
            headers = {**wav, INFERENCE_ID: "client-id-0001"} if i == 0 else wav
            r = _post(server, clip.path.read_bytes(), headers)
            assert r.status_code == 200, r.text
            result.statuses[r.headers["X-Request-Id"]] = 200
            result.answers[r.headers["X-Request-Id"]] = r.json()

        r = _post(server, b"not json", {"Content-Type": "application/json", INFERENCE_ID: "client-id-0400"})
        assert r.status_code == 400, r.text
        result.statuses[r.headers["X-Request-Id"]] = 400
        result.answers[r.headers["X-Request-Id"]] = r.json()

        big = json.dumps({"audio": "A" * 20000}).encode()  # over WHISPER_MAX_JSON_MB, refused by the app
        r = _post(server, big, {"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        result.statuses[r.headers["X-Request-Id"]] = 413

        r = _post(server, clips[2].path.read_bytes(), {**wav, **STREAM, INFERENCE_ID: "client-id-stream"}, stream=True)
        assert r.status_code == 200
        lines = [json.loads(ln) for ln in r.iter_lines() if ln]
        result.statuses[r.headers["X-Request-Id"]] = 200
        result.answers[r.headers["X-Request-Id"]] = lines

        r = _post(server, long.path.read_bytes(), {**wav, **STREAM}, stream=True)  # the client leaves mid-stream
        assert r.status_code == 200 and json.loads(next(r.iter_lines()))["type"] == "segment"
        r.close()
        left = r.headers["X-Request-Id"]
        assert request_line(server, left)["status"] == 499
        result.statuses[left] = 499

        watching = threading.Event()
        watching.set()

        def watch_queue() -> None:
            while watching.is_set():
                m = scrape(server)
                result.most_queued = (max(result.most_queued[0], value(m, "whisper_queued_windows")),
                                      max(result.most_queued[1], value(m, "whisper_queued_audio_seconds")))

        watcher = threading.Thread(target=watch_queue)
        watcher.start()
        try:
            with ThreadPoolExecutor(CONCURRENT) as pool:
                answers = list(pool.map(lambda c: _post(server, c.path.read_bytes(), wav), clips[3:]))
        finally:
            watching.clear()
            watcher.join()
        for r in answers:
            assert r.status_code == 200, r.text
            result.statuses[r.headers["X-Request-Id"]] = 200
            result.answers[r.headers["X-Request-Id"]] = r.json()

        # Live: one session a worker, two workers, three tries: at least one is refused (1013)
        url = server.url.replace("http://", "ws://") + "/invocations-bidirectional-stream"
        with contextlib.ExitStack() as held:
            sockets = [held.enter_context(connect(url, open_timeout=30)) for _ in range(LIVE_TRIES)]
            for ws in sockets:
                first = json.loads(ws.recv(timeout=60))
                if first["type"] == "session.created":
                    result.live_admitted += 1
                else:
                    with pytest.raises(ConnectionClosed) as closed:
                        ws.recv(timeout=60)
                    assert closed.value.rcvd.code == 1013
            result.live_open_seen = value(scrape(server), "whisper_live_sessions")
        for _ in range(600):  # the sessions leave as their handlers see the close
            if value(scrape(server), "whisper_live_sessions") == 0:
                break
            time.sleep(0.1)
        result.after = scrape(server)
        yield result


def delta(run: Run, name: str, **labels) -> float:
    return total(run.after, name, **labels) - total(run.before, name, **labels)


def lines_of(run: Run) -> dict[str, dict]:
    """Each request's own JSON log line, by its id."""
    return {rid: request_line(run.server, rid) for rid in run.statuses}


# --- GET /metrics ---------------------------------------------------------------------------------


def test_requests_are_counted_by_route_status_and_error_kind_exactly(run):
    lines = lines_of(run)
    assert [lines[rid]["status"] for rid in run.statuses] == list(run.statuses.values())
    expected = Counter((ln["status"], ln.get("error_type", "")) for ln in lines.values())
    assert expected[(200, "")] == 2 + 1 + CONCURRENT
    assert expected[(400, "InvalidRequest")] == 1 and expected[(413, "PayloadTooLarge")] == 1
    counted = {(int(dict(ls)["status"]), dict(ls)["error_type"]): 0 for (n, ls) in run.after
               if n == "whisper_requests_total"}
    for status, error in counted:
        counted[(status, error)] = delta(run, "whisper_requests_total", route="/invocations", status=str(status),
                                         error_type=error)
    assert {k: v for k, v in counted.items() if v} == dict(expected)
    assert delta(run, "whisper_requests_cancelled_total", reason="client_left") == 1
    assert delta(run, "whisper_requests_cancelled_total", reason="timeout") == 0


def test_histograms_hold_every_request_with_the_log_lines_totals(run):
    lines = list(lines_of(run).values())
    route = {"route": "/invocations"}
    assert delta(run, "whisper_request_seconds_count", **route) == len(lines)
    assert delta(run, "whisper_request_seconds_sum", **route) == pytest.approx(
        sum(ln["total_seconds"] for ln in lines), abs=1e-6)
    audio = [ln["audio_seconds"] for ln in lines if "audio_seconds" in ln]
    assert len(audio) == 2 + 1 + CONCURRENT
    assert delta(run, "whisper_audio_seconds_total", **route) == pytest.approx(sum(audio), abs=1e-6)
    rtf = [ln["rtf"] for ln in lines if ln.get("rtf") is not None]
    assert delta(run, "whisper_realtime_factor_count", **route) == len(rtf) == len(audio)
    assert delta(run, "whisper_realtime_factor_sum", **route) == pytest.approx(sum(rtf), abs=1e-6)
    first = [ln["first_segment_seconds"] for ln in lines if "first_segment_seconds" in ln]
    assert len(first) == len(audio) + 1  # and the one whose client left after its first segment
    assert delta(run, "whisper_first_segment_seconds_count", **route) == len(first)
    assert delta(run, "whisper_first_segment_seconds_sum", **route) == pytest.approx(sum(first), abs=1e-6)
    # bucket counts are cumulative: the +Inf bucket holds them all
    assert delta(run, "whisper_request_seconds_bucket", le="+Inf", **route) == len(lines)


def test_engine_calls_batches_and_decodes_moved_with_the_work(run):
    calls = delta(run, "whisper_batch_size_count")
    assert calls >= 1 and delta(run, "whisper_engine_call_seconds_count") == calls
    # every answered request needed a window at least; no call held more than WHISPER_MAX_BATCH
    assert delta(run, "whisper_batch_size_sum") >= 2 + 1 + CONCURRENT
    assert delta(run, "whisper_batch_size_bucket", le="2.0") == calls
    assert delta(run, "whisper_batch_size_bucket", le="1.0") < calls, "no two windows were ever batched"
    # the requests that reached ffmpeg: the answered ones, and the one whose client left (if decoded by then)
    assert 2 + 1 + CONCURRENT <= delta(run, "whisper_decode_seconds_count") <= 2 + 1 + CONCURRENT + 1


def test_the_queue_gauges_moved_and_came_back_to_zero(run):
    windows, audio = run.most_queued
    assert windows >= 1 and audio > 0, "eight requests at once on batches of two: windows must have waited"
    assert value(run.after, "whisper_queued_windows") == 0
    assert value(run.after, "whisper_queued_audio_seconds") == 0


def test_every_worker_counts(run):
    workers = run.server.workers()
    assert len(workers) == 2
    assert {dict(ls)["pid"] for (n, ls) in run.after if n == "whisper_worker_rss_bytes"} == {str(p) for p in workers}
    assert all(v > 0 for (n, _), v in run.after.items() if n == "whisper_worker_rss_bytes")
    assert not any(n == "whisper_gpu_memory_bytes" for (n, _) in run.after)  # no CUDA here: no GPU gauge
    assert value(run.after, "whisper_packing") == 0
    assert value(run.after, "whisper_model_load_seconds") > 0 and value(run.after, "whisper_warmup_seconds") > 0


def test_live_sessions_open_and_refused(run):
    assert 1 <= run.live_admitted <= 2
    assert run.live_open_seen == run.live_admitted
    assert delta(run, "whisper_live_sessions_refused_total") == LIVE_TRIES - run.live_admitted
    assert value(run.after, "whisper_live_sessions") == 0


# --- the request id: header, log line, error body, streamed done line --------------------------------


def test_the_callers_inference_id_names_the_request_everywhere(run):
    lines = lines_of(run)
    assert lines["client-id-0001"]["status"] == 200  # the header (X-Request-Id) and the log line
    assert run.answers["client-id-0001"]["request_id"] == "client-id-0001"
    assert run.answers["client-id-0400"]["error"]["request_id"] == "client-id-0400"
    done = run.answers["client-id-stream"][-1]
    assert done["type"] == "done" and done["request_id"] == "client-id-stream"
    made = [rid for rid in run.statuses if not rid.startswith("client-id-")]
    assert made and all(len(rid) == 32 and int(rid, 16) >= 0 for rid in made)  # ours where none was sent


# --- the EMF lines ----------------------------------------------------------------------------------


def assert_emf(line: dict) -> None:
    """The EMF specification: the ``_aws`` block, and every metric and dimension as a top-level member."""
    meta = line["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == "WhisperTest"
    assert directive["Dimensions"] and all(isinstance(d, list) and d for d in directive["Dimensions"])
    for dims in directive["Dimensions"]:
        assert len(dims) <= 30 and all(isinstance(line[d], str) for d in dims)
    assert ["EndpointName", "VariantName"] in directive["Dimensions"]
    assert line["EndpointName"] == "test-endpoint" and line["VariantName"] == "blue"
    assert 1 <= len(directive["Metrics"]) <= 100
    for metric in directive["Metrics"]:
        assert set(metric) <= {"Name", "Unit", "StorageResolution"}
        assert metric["Unit"] in ("Seconds", "Count", "Bytes", "None")
        v = line[metric["Name"]]
        values = v if isinstance(v, list) else [v]
        assert values and len(values) <= 100 and all(isinstance(x, (int, float)) for x in values)


def emf_lines(server: ServerHandle) -> list[dict]:
    return [e for e in events(server) if "_aws" in e]


def test_every_emf_line_follows_the_specification(run):
    lines = emf_lines(run.server)
    assert lines
    for line in lines:
        assert_emf(line)
    served = [ln for ln in lines if "Backend" in ln]
    assert served and all(["EndpointName", "VariantName", "Backend", "Model"] in ln["_aws"]["CloudWatchMetrics"][0][
        "Dimensions"] and ln["Backend"] == "ctranslate2" and ln["Model"] == "tiny.en" for ln in served)


def test_each_request_has_one_emf_line_with_its_log_lines_numbers(run):
    log = lines_of(run)
    requests_emf = [ln for ln in emf_lines(run.server) if ln.get("emf") == "request"]
    # the lines of this run: matched to its log lines by their numbers (the id stays in the log line alone)
    unmatched = list(requests_emf)
    for rid, ln in log.items():
        want = {"Requests": 1, "RequestLatency": ln["total_seconds"], "status": ln["status"],
                "error_type": ln.get("error_type", "")}
        if "audio_seconds" in ln:
            want.update(AudioSeconds=ln["audio_seconds"], RealTimeFactor=ln["rtf"])
        if "first_segment_seconds" in ln:
            want["TimeToFirstSegment"] = ln["first_segment_seconds"]
        if ln["status"] == 499:
            want["RequestsCancelled"] = 1
        match = next((e for e in unmatched if all(e.get(k) == v for k, v in want.items())), None)
        assert match is not None, (rid, want)
        unmatched.remove(match)
    assert len(requests_emf) == len(log)  # and no other request line was written


def test_the_gauge_lines_carry_the_same_totals_as_prometheus(run):
    """Batch sizes, engine calls and decodes are gathered into each worker's gauge line (every second):
    over the server's life they add up to Prometheus's totals (warm-up included in both)."""
    m = scrape(run.server)
    want = {"BatchSize": (total(m, "whisper_batch_size_count"), total(m, "whisper_batch_size_sum")),
            "EngineCallLatency": (total(m, "whisper_engine_call_seconds_count"),
                                  total(m, "whisper_engine_call_seconds_sum")),
            "DecodeLatency": (total(m, "whisper_decode_seconds_count"), total(m, "whisper_decode_seconds_sum"))}
    want_refused = total(m, "whisper_live_sessions_refused_total")
    got, refused = {}, 0
    # Until every worker's next gauge line has been written: a refusal counted by a worker whose batches
    # are already all written still waits for that worker's next line, up to a second later.
    for _ in range(300):
        lines = emf_lines(run.server)
        gauges = [ln for ln in lines if ln.get("emf") == "gauges"]
        got = {}
        for name in want:
            values = [x for ln in gauges if name in ln for x in (ln[name] if isinstance(ln[name], list) else [ln[name]])]
            got[name] = (len(values), sum(values))
        refused = sum(ln.get("LiveSessionsRefused", 0) for ln in lines)
        if all(got[n][0] == want[n][0] for n in want) and refused == want_refused:
            break
        time.sleep(0.1)
    for name, (count, summed) in want.items():
        assert got[name][0] == count, (name, got, want)
        assert got[name][1] == pytest.approx(summed, rel=1e-9, abs=1e-9), name
    assert refused == want_refused
    queued = [ln for ln in emf_lines(run.server) if "QueuedWindows" in ln]
    assert queued and {ln["pid"] for ln in queued} == set(run.server.workers())
