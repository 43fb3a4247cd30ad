"""bench/live.py's metrics on sessions written by hand, and one whole run of it against the fake server."""

from __future__ import annotations

import numpy as np
import pytest

from bench import live as bench
from serve.live.client import COMMITTED, COMPLETED, DELTA, SPEECH_STARTED, SPEECH_STOPPED, LiveResult, Received
from tests.live.test_client import FakeLive


def session(*events, commit_at=None, complete=True, code=1000) -> LiveResult:
    """A LiveResult from (at, type, fields) triples."""
    return LiveResult([Received(at, {"type": kind, **fields}) for at, kind, fields in events], code, "",
                      commit_at=commit_at, complete=complete)


REF = [("the", 1.0, 1.2), ("quick", 1.2, 1.5), ("brown", 1.5, 1.8), ("fox", 1.8, 2.0),
       ("jumps", 3.5, 3.8), ("over", 3.8, 4.0)]


def two_turns() -> LiveResult:
    """Turn A (VAD: started, deltas, stopped at 2.1 s, completed) and turn B (our commit's, at 4.5 s)."""
    return session(
        (-0.01, "session.created", {}),
        (1.1, SPEECH_STARTED, {"item_id": "A", "audio_start_ms": 900}),
        (1.4, DELTA, {"item_id": "A", "delta": " The quick,"}),
        (2.0, DELTA, {"item_id": "A", "delta": " brown"}),
        (2.2, SPEECH_STOPPED, {"item_id": "A", "audio_end_ms": 2100}),
        (2.3, COMMITTED, {"item_id": "A"}),
        (2.9, COMPLETED, {"item_id": "A", "transcript": "The quick, brown box."}),
        (4.0, SPEECH_STARTED, {"item_id": "B", "audio_start_ms": 3400}),
        (4.6, COMMITTED, {"item_id": "B"}),
        (5.0, COMPLETED, {"item_id": "B", "transcript": "Jumps over!"}),
        commit_at=4.5)


def test_words_lose_case_and_punctuation_not_their_count():
    assert bench.words_of("Hello, World! It's 3 o'clock. — 'quoted'") == [
        "hello", "world", "it's", "3", "o'clock", "quoted"]


def test_live_words_come_with_their_delta_or_else_their_completed():
    assert bench.live_words(two_turns()) == [(1.4, "the"), (1.4, "quick"), (2.0, "brown"), (2.9, "box"),
                                             (5.0, "jumps"), (5.0, "over")]


def test_word_latency_is_arrival_minus_the_words_end_for_aligned_words():
    """'box' is not 'fox': it has no latency; the others are aligned in order."""
    latencies = bench.word_latencies(bench.live_words(two_turns()), REF)
    assert latencies == pytest.approx([1.4 - 1.2, 1.4 - 1.5, 2.0 - 1.8, 5.0 - 3.8, 5.0 - 4.0])


def test_a_word_said_twice_is_aligned_in_order():
    ref = [("no", 0.0, 0.3), ("no", 0.5, 0.8)]
    assert bench.word_latencies([(1.0, "no"), (2.0, "no")], ref) == pytest.approx([0.7, 1.2])


def test_first_delta_counts_from_the_first_spoken_word():
    assert bench.first_delta(two_turns(), REF) == pytest.approx(0.4)
    assert bench.first_delta(session((0.1, COMPLETED, {"item_id": "A", "transcript": ""})), REF) is None


def test_stopped_to_completed_only_for_turns_that_stopped():
    assert bench.stopped_to_completed(two_turns()) == pytest.approx([0.7])


def test_lag_from_each_turns_audio_end():
    """A's audio ended at 2.1 s (its speech_stopped), B's at the end of the audio (our commit ended it);
    a turn committed before our commit with no speech_stopped has no known end."""
    result = two_turns()
    assert [x for point in bench.lags(result, 4.4) for x in point] == pytest.approx([2.1, 0.8, 4.4, 0.6])
    odd = session((1.0, COMMITTED, {"item_id": "C"}), (1.5, COMPLETED, {"item_id": "C", "transcript": "x"}),
                  commit_at=3.0)
    assert bench.lags(odd, 3.0) == []


def test_lag_growth_per_minute():
    points = [(t, 0.5 + 0.01 * t) for t in range(0, 600, 30)]
    assert bench.growth_per_minute(points) == pytest.approx(0.6)
    assert bench.growth_per_minute(points[:1]) is None


def test_held_means_ended_well_and_not_far_behind():
    assert bench.held(bench.Outcome(two_turns()), 4.4, max_lag=1.0)
    assert not bench.held(bench.Outcome(two_turns()), 4.4, max_lag=0.5)
    cut = session(*[(r.at, r.type, {k: v for k, v in r.event.items() if k != "type"}) for r in two_turns().events],
                  complete=False, code=1013)
    assert not bench.held(bench.Outcome(cut, "closed", 1013), 4.4, max_lag=1.0)


def test_summary_pools_the_sessions():
    ref = bench.Reference("The quick brown fox. Jumps over.", REF)
    cut = session((1.4, DELTA, {"item_id": "A", "delta": " The"}), complete=False, code=1013)
    row = bench.summarise([bench.Outcome(two_turns()), bench.Outcome(cut, "lagging", 1013)], ref, 4.4,
                          "The quick brown fox jumps over.", max_lag=1.0)
    assert row["sessions"] == 2 and row["held"] == 1 and row["closed"] == {"1013": 1}
    assert row["word_p50_s"] == pytest.approx(float(np.percentile([0.2, -0.1, 0.2, 1.2, 1.0, 0.2], 50)))
    assert row["aligned"] == pytest.approx((5 / 6 + 1 / 6) / 2)
    assert row["lag_last_s"] == pytest.approx(0.6)
    assert row["wer_vs_file"] == pytest.approx(1 / 6)  # box for fox; only the complete session is scored


def test_ratios_against_one_session_of_the_same_round_and_audio():
    rows = [{"round": 1, "kind": "short", "sessions": 1, "word_p50_s": 0.5, "word_p95_s": 1.0,
             "completed_p95_s": 2.0},
            {"round": 1, "kind": "short", "sessions": 4, "word_p50_s": 1.0, "word_p95_s": 3.0,
             "completed_p95_s": None},
            {"round": 1, "kind": "long", "sessions": 4, "word_p50_s": 1.0, "word_p95_s": 3.0,
             "completed_p95_s": 1.0}]
    bench.ratios(rows)
    assert (rows[1]["x_word_p50_s"], rows[1]["x_word_p95_s"], rows[1]["x_completed_p95_s"]) == (2.0, 3.0, None)
    assert rows[2]["x_word_p95_s"] is None


def test_join_puts_pauses_between_clips_and_loops_for_a_long_stream():
    parts = [(np.ones(1600, np.int16), "One."), (np.ones(3200, np.int16), "Two.")]
    audio, text = bench.join(parts)
    assert text == "One. Two." and len(audio) == 16000 * (bench.LEAD_S + 2 * bench.PAUSE_S) + 4800
    audio, text = bench.join(parts, min_seconds=10)  # 1 s, then 1.6 s and 1.7 s a clip: 10.9 s
    assert text == "One. Two. One. Two. One. Two." and len(audio) == 16000 * 10.9


def test_reference_words_and_urls():
    body = {"text": " Hi, there.", "words": [{"word": " Hi,", "start": 0.1, "end": 0.3},
                                             {"word": " there.", "start": 0.3, "end": 0.6}]}
    assert bench.reference_from(body).words == [("hi", 0.1, 0.3), ("there", 0.3, 0.6)]
    with pytest.raises(RuntimeError, match="word_timestamps"):
        bench.reference_from({"text": "hi"})
    assert bench.urls("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", "ws://127.0.0.1:8080")
    assert bench.urls("wss://example/x") == ("https://example/x", "wss://example/x")


def test_a_whole_run_against_the_fake_server(monkeypatch, capsys):
    """main() end to end on two tiny clips: 1 and 2 sessions against the fake (which speaks once 0.5 s
    of audio came), the file reference stubbed: a row per session count, the table, the ratios."""
    server = FakeLive(vad_at_bytes=25 * 640, hold_vad=False)
    try:
        rng = np.random.default_rng(0)
        monkeypatch.setattr(bench, "clips", lambda audio, count: [
            (rng.integers(-3000, 3000, 3200, dtype=np.int16), "One two three."),
            (rng.integers(-3000, 3000, 3200, dtype=np.int16), "Four.")])
        monkeypatch.setattr(bench, "reference", lambda url, wav, key: bench.Reference(
            "one two three", [("one", 0.2, 0.3), ("two", 0.3, 0.4), ("three", 0.4, 0.45)]))
        monkeypatch.setattr(bench, "PAUSE_S", 0.2)
        monkeypatch.setattr(bench, "LEAD_S", 0.1)
        assert bench.main(["--url", server.url, "--sessions", "1,2", "--finish-timeout", "10"]) == 0
    finally:
        server.stop()
    table = capsys.readouterr().out.split("\n| round")[1].splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 | short 1 s | 1 | 1/1 ") and "(x1.00 / x1.00)" in table[2]
    assert table[3].startswith("| 1 | short 1 s | 2 | 2/2 ")
    assert len(server.seen) == 3 and {s.path for s in server.seen} == {"/invocations-bidirectional-stream"}


def test_the_reference_asks_for_word_timestamps(tmp_path):
    """POST /invocations with the WAV, word_timestamps=true in SageMaker's custom attributes, the key."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked = {}

    class Invocations(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            asked.update(path=self.path, headers=dict(self.headers), riff=body[:4])
            answer = json.dumps({"text": " Hi.", "words": [{"word": " Hi.", "start": 0.5, "end": 0.7}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Invocations)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        wav = bench.write_wav(tmp_path / "a.wav", np.zeros(1600, np.int16))
        ref = bench.reference(f"http://127.0.0.1:{http.server_address[1]}", wav, "k")
    finally:
        http.shutdown()
    assert ref == bench.Reference(" Hi.", [("hi", 0.5, 0.7)])
    assert asked["path"] == "/invocations" and asked["riff"] == b"RIFF"
    assert asked["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "word_timestamps=true"
    assert asked["headers"]["Authorization"] == "Bearer k"


def test_passes_per_engine_call_come_from_the_servers_live_pass_lines():
    lines = ['2026-12-04 INFO serve.events: {"event": "live_pass", "engine_call": 7}',
             '{"event": "live_pass", "engine_call": 7}', '{"event": "live_pass", "engine_call": 9}',
             '{"event": "invocation", "engine_call": 9}', '{"event": "live_pass", "status": 503}', 'other line']
    assert bench.pass_batching(lines) == 1.5
    assert bench.pass_batching(["nothing here"]) is None
