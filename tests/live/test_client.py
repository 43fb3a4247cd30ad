"""serve/live/client.py against a small fake server that follows the wire contract (live-spec.md) on cue.

The fake records what it received (path, headers, each frame's size, every JSON event, the audio bytes,
the client's close code) and says what its script says: VAD turns, a held ``completed``, an empty
commit, a 1013 close. Nothing asserts on wall time; frames and events are counted.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pytest
import soxr
from websockets.sync.server import serve

from serve.live import client
from serve.live.client import (COMMIT_EMPTY, COMMITTED, COMPLETED, DELTA, LiveClosedError, LiveError,
                               LiveRefusedError, LiveTimeoutError, Pacer, alaw_encode, stream, ulaw_encode)

RATE = 16000
FRAME = 640  # 20 ms of 16 kHz PCM16


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise-like int16 samples (their bytes are checked one for one, so no two frames alike)."""
    return np.random.default_rng(seed).integers(-8000, 8000, int(seconds * RATE), dtype=np.int16)


@dataclass
class Seen:
    path: str = ""
    headers: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)
    """(kind, bytes of audio) per audio message: kind "binary" or "append"."""
    events: list = field(default_factory=list)
    """Every JSON event the client sent, in order, with the number of audio frames before it."""
    audio: bytearray = field(default_factory=bytearray)
    ended: threading.Event = field(default_factory=threading.Event)
    received_close: Optional[int] = None

    @property
    def close_code(self) -> Optional[int]:
        """The code of the client's close frame, once the server's handler is done with the connection."""
        assert self.ended.wait(10), "the fake server's handler did not end"
        return self.received_close


class FakeLive:
    """A live server on 127.0.0.1 that follows the contract, with a script.

    vad_at_bytes: when that much audio has arrived, the "VAD" ends a turn (speech_started, speech_stopped,
        committed, a delta), whose ``completed`` comes only after the client's commit is answered
        (``hold_vad``) or at once. The buffer is then empty: a commit right after it is empty.
    lag_after_frames: after that many frames, ``error`` session_lagging and a 1013 close.
    busy: ``error`` server_busy and a 1013 close at once, before session.created.
    complete: whether a committed turn ever gets its ``completed``.
    refuse_update: answer session.update with an ``error`` naming its event_id.
    key: the Bearer token the handshake needs (401 without it).
    stop_on_commit: a speech_stopped before the committed of the commit's own turn, as the VAD's turns have.
    """

    def __init__(self, *, vad_at_bytes: Optional[int] = None, hold_vad: bool = True,
                 lag_after_frames: Optional[int] = None, busy: bool = False, complete: bool = True,
                 refuse_update: bool = False, key: Optional[str] = None, stop_on_commit: bool = False,
                 transcript: str = "one two three"):
        self.vad_at_bytes, self.hold_vad = vad_at_bytes, hold_vad
        self.lag_after_frames, self.busy, self.complete = lag_after_frames, busy, complete
        self.refuse_update, self.key, self.transcript = refuse_update, key, transcript
        self.stop_on_commit = stop_on_commit
        self.seen: list[Seen] = []
        self.server = serve(self.handle, "127.0.0.1", 0, process_request=self.check_key, compression=None)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check_key(self, connection, request):
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return connection.respond(401, "missing or wrong API key\n")
        return None

    @staticmethod
    def say(conn, type_: str, **fields) -> None:
        conn.send(json.dumps({"type": type_, "event_id": f"event_{uuid.uuid4().hex[:8]}", **fields}))

    def turn(self, conn, item: str, complete: bool = True) -> None:
        self.say(conn, COMMITTED, item_id=item, previous_item_id=None)
        words = self.transcript.split()
        for i in range(0, len(words), 2):
            self.say(conn, DELTA, item_id=item, content_index=0, delta=" " + " ".join(words[i:i + 2]))
        if complete:
            self.completed(conn, item)

    def completed(self, conn, item: str) -> None:
        self.say(conn, COMPLETED, item_id=item, content_index=0, transcript=f"{self.transcript} ({item})")

    def handle(self, conn) -> None:
        seen = Seen(conn.request.path, dict(conn.request.headers.raw_items()))
        self.seen.append(seen)
        if self.busy:
            self.say(conn, "error", error={"type": "server_error", "code": "server_busy", "message": "at capacity",
                                           "param": None, "event_id": None})
            conn.close(1013, "server busy")
            seen.ended.set()
            return
        self.say(conn, "session.created", session={"type": "transcription"})
        buffered, held, vad_done = 0, [], False
        for message in conn:
            if isinstance(message, bytes):
                audio, kind = message, "binary"
            else:
                event = json.loads(message)
                seen.events.append((len(seen.frames), event))
                kind = event["type"]
                if kind == "input_audio_buffer.append":
                    audio, kind = base64.b64decode(event["audio"]), "append"
                elif kind == "session.update":
                    if self.refuse_update:
                        self.say(conn, "error", error={"type": "invalid_request_error", "code": "invalid_value",
                                                       "message": "no", "param": None,
                                                       "event_id": event.get("event_id")})
                    else:
                        self.say(conn, "session.updated", session=event["session"])
                    continue
                elif kind == "input_audio_buffer.commit":
                    if buffered == 0:
                        self.say(conn, "error", error={"type": "invalid_request_error", "code": COMMIT_EMPTY,
                                                       "message": "nothing buffered", "param": None,
                                                       "event_id": event.get("event_id")})
                    else:
                        if self.stop_on_commit:
                            self.say(conn, "input_audio_buffer.speech_stopped", audio_end_ms=len(seen.audio) // 32,
                                     item_id="item_commit")
                        self.turn(conn, "item_commit", self.complete)
                    buffered = 0
                    for item in held:  # the VAD turn's completed, after the commit's own turn
                        self.completed(conn, item)
                    held = []
                    continue
                else:
                    continue
            seen.frames.append((kind, len(audio)))
            seen.audio += audio
            buffered += len(audio)
            if self.lag_after_frames is not None and len(seen.frames) == self.lag_after_frames:
                self.say(conn, "error", error={"type": "server_error", "code": "session_lagging",
                                               "message": "behind real time", "param": None, "event_id": None})
                conn.close(1013, "session lagging")
                break
            if self.vad_at_bytes is not None and not vad_done and len(seen.audio) >= self.vad_at_bytes:
                vad_done = True
                self.say(conn, "input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_vad")
                self.say(conn, "input_audio_buffer.speech_stopped", audio_end_ms=len(seen.audio) // 32,
                         item_id="item_vad")
                self.turn(conn, "item_vad", complete=not self.hold_vad)
                if self.hold_vad:
                    held.append("item_vad")
                buffered = 0
        conn.close()
        seen.received_close = conn.protocol.close_rcvd.code if conn.protocol.close_rcvd else None
        seen.ended.set()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture
def fake(request):
    servers = []

    def make(**script) -> FakeLive:
        servers.append(FakeLive(**script))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


# ---- pacing ------------------------------------------------------------------------------------


def test_pacer_holds_its_schedule_when_a_send_is_slow():
    """Frame k leaves at k * 20 ms; one slow send (50 ms) delays the next two frames, and the pace
    comes back: it never drifts by the time the sends took."""
    now = [100.0]
    pacer = Pacer(100.0, 0.02, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    sent, cost = [], {2: 0.05}
    for k in range(8):
        pacer.wait(k)
        sent.append(round(now[0] - 100.0, 6))
        now[0] += cost.get(k, 0.001)
    assert sent == [0.0, 0.02, 0.04, 0.09, 0.091, 0.1, 0.12, 0.14]
    assert pacer.max_late == pytest.approx(0.03)


def test_frames_of_the_right_size_at_real_time_pace(fake):
    server = fake()
    samples = tone(0.31)  # 15 whole frames and half of one
    result = stream(server.url, samples, finish_timeout=10)
    seen = server.seen[0]
    assert [size for _, size in seen.frames] == [FRAME] * 15 + [320]
    assert {kind for kind, _ in seen.frames} == {"binary"}
    assert bytes(seen.audio) == samples.astype("<i2").tobytes()
    assert result.frames == 16
    assert result.complete and result.closed_code == 1000 and seen.close_code == 1000


def test_frame_ms_sets_the_frame_size(fake):
    server = fake()
    stream(server.url, tone(0.5), frame_ms=100, realtime=False, finish_timeout=10)
    assert [size for _, size in server.seen[0].frames] == [3200] * 5


def test_event_times_count_from_the_first_frame(fake):
    """The server speaks once 25 frames arrived: paced, the 25th leaves no earlier than 24 x 20 ms after
    the first, so that event's time is at least 0.48 s (a lower bound that holds on any machine); what came
    before the audio has a negative or zero time, and on_event sees every event, in order, as recorded."""
    server = fake(vad_at_bytes=25 * FRAME, hold_vad=False)
    seen_live = []
    result = stream(server.url, tone(1.0), on_event=seen_live.append, finish_timeout=10)
    assert seen_live == result.events
    assert result.events[0].type == "session.created" and result.events[0].at <= 0
    stopped = result.of("input_audio_buffer.speech_stopped")[0]
    assert stopped.at >= 24 * 0.02
    times = [r.at for r in result.events]
    assert times == sorted(times)
    assert result.deltas()[0][1:] == ("item_vad", " one two")
    assert result.commit_at >= 49 * 0.02


def test_fast_mode_sends_the_same_frames(fake):
    server = fake()
    samples = tone(0.4, seed=3)
    result = stream(server.url, samples, realtime=False, finish_timeout=10)
    assert result.frames == 20 and bytes(server.seen[0].audio) == samples.tobytes()


def test_chunks_as_they_come_are_cut_into_frames(fake):
    """A microphone's blocks (not whole frames) are re-cut: whole frames, the rest last."""
    server = fake()
    samples = tone(0.5, seed=4)
    chunks = [samples[i:i + 1000] for i in range(0, len(samples), 1000)]
    stream(server.url, iter(chunks), finish_timeout=10)
    assert [size for _, size in server.seen[0].frames] == [FRAME] * 25
    assert bytes(server.seen[0].audio) == samples.tobytes()


# ---- the two doors and the formats -------------------------------------------------------------


def test_sagemaker_door_binary_frames_and_no_configuration(fake):
    server = fake()
    stream(server.url, tone(0.2), finish_timeout=10)
    seen = server.seen[0]
    assert seen.path == "/invocations-bidirectional-stream"
    assert [e["type"] for _, e in seen.events] == ["input_audio_buffer.commit"]
    assert seen.events[0][0] == 10  # the commit came after every frame


def test_openai_door_appends_base64_after_saying_the_format(fake):
    server = fake()
    samples = tone(0.2, seed=1)
    result = stream(server.url, samples, door="openai", finish_timeout=10)
    seen = server.seen[0]
    assert seen.path == "/v1/realtime?intent=transcription"
    assert seen.frames == [("append", FRAME)] * 10
    assert bytes(seen.audio) == samples.tobytes()
    kinds = [e["type"] for _, e in seen.events]
    assert kinds == ["session.update"] + ["input_audio_buffer.append"] * 10 + ["input_audio_buffer.commit"]
    update = seen.events[0][1]
    assert update["session"]["type"] == "transcription"
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert [r.type for r in result.events][:2] == ["session.created", "session.updated"]


@pytest.mark.parametrize("fmt, size, wire", [
    ("pcm24", 960, {"type": "audio/pcm", "rate": 24000}),
    ("pcmu", 160, {"type": "audio/pcmu"}),
    ("pcma", 160, {"type": "audio/pcma"}),
])
def test_input_formats_are_converted_and_announced(fake, fmt, size, wire):
    server = fake()
    samples = tone(0.4, seed=2)
    stream(server.url, samples, input_format=fmt, finish_timeout=10)
    seen = server.seen[0]
    update = seen.events[0][1]
    assert seen.events[0][0] == 0 and update["type"] == "session.update"
    assert update["session"]["audio"]["input"] == {"format": wire}
    assert [s for _, s in seen.frames] == [size] * 20
    rate = 24000 if fmt == "pcm24" else 8000
    resampled = soxr.resample(samples, RATE, rate)
    expected = {"pcm24": lambda x: x.astype("<i2").tobytes(), "pcmu": ulaw_encode, "pcma": alaw_encode}[fmt]
    assert bytes(seen.audio) == expected(resampled)


def test_session_settings_merge_into_the_update(fake):
    server = fake()
    stream(server.url, tone(0.1), session={"whisper": {"segments": True},
                                           "audio": {"input": {"turn_detection": None}}}, finish_timeout=10)
    session = server.seen[0].events[0][1]["session"]
    assert session["whisper"] == {"segments": True}
    assert session["audio"]["input"] == {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}


def _g191_ulaw(x: int) -> int:
    """ITU-T G.191's ulaw_compress, line by line, for one sample."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i != 0:
        segno += 1
        i >>= 1
    out = ((8 - segno) << 4) | (15 - ((absno >> segno) & 0xF))
    return out | 0x80 if x >= 0 else out


def _g191_alaw(x: int) -> int:
    """ITU-T G.191's alaw_compress, line by line, for one sample."""
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix = ix - 16 + (iexp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def test_g711_encoders_match_the_itu_reference_on_every_sample():
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(every) == bytes(_g191_ulaw(int(x)) for x in every)
    assert alaw_encode(every) == bytes(_g191_alaw(int(x)) for x in every)
    assert ulaw_encode(np.zeros(1, np.int16)) == b"\xff" and alaw_encode(np.zeros(1, np.int16)) == b"\xd5"


def test_api_key_goes_in_the_authorization_header(fake):
    server = fake(key="sesame")
    stream(server.url, tone(0.1), api_key="sesame", finish_timeout=10)
    assert server.seen[0].headers["Authorization"] == "Bearer sesame"
    with pytest.raises(LiveRefusedError, match="HTTP 401"):
        stream(server.url, tone(0.1), finish_timeout=10)


# ---- the end of a stream -----------------------------------------------------------------------


def test_waits_for_every_committed_items_completed(fake):
    """A VAD turn committed mid-stream gets its completed only after the commit's own turn completed:
    the client reads on until it has it, and closes (1000) after it."""
    server = fake(vad_at_bytes=10 * FRAME)
    result = stream(server.url, tone(0.5), finish_timeout=10)
    assert [r.event["item_id"] for r in result.of(COMPLETED)] == ["item_commit", "item_vad"]
    assert result.transcripts() == ["one two three (item_vad)", "one two three (item_commit)"]  # the audio's order
    assert result.text() == "one two three (item_vad) one two three (item_commit)"
    assert result.complete and server.seen[0].close_code == 1000
    assert [r.type for r in result.events][-1] == COMPLETED


def test_an_empty_commit_ends_the_stream(fake):
    """The VAD committed everything: the commit is answered by commit_empty, and the stream ends there."""
    server = fake(vad_at_bytes=25 * FRAME, hold_vad=False)
    result = stream(server.url, tone(0.5), finish_timeout=10)
    assert result.complete and [e["code"] for e in result.errors()] == [COMMIT_EMPTY]
    assert result.transcripts() == ["one two three (item_vad)"]
    assert server.seen[0].close_code == 1000


def test_no_audio_at_all_ends_on_commit_empty(fake):
    server = fake()
    result = stream(server.url, np.zeros(0, np.int16), finish_timeout=10)
    assert result.complete and result.frames == 0 and [e["code"] for e in result.errors()] == [COMMIT_EMPTY]
    assert result.transcripts() == [] and server.seen[0].close_code == 1000


def test_a_commit_answered_like_a_vad_turn_still_ends(fake):
    """A server that sends speech_stopped before the committed of the commit's own turn: that committed
    looks like a VAD turn's, so the client waits a moment for another answer, then ends (no timeout)."""
    server = fake(stop_on_commit=True)
    result = stream(server.url, tone(0.2), realtime=False, finish_timeout=30)
    assert result.complete and result.transcripts() == ["one two three (item_commit)"]
    assert server.seen[0].close_code == 1000


def test_a_turn_that_never_completes_times_out(fake):
    server = fake(complete=False)
    with pytest.raises(LiveTimeoutError, match="item_commit") as caught:
        stream(server.url, tone(0.1), realtime=False, finish_timeout=0.5)
    assert caught.value.result.of(COMMITTED) and not caught.value.result.complete


def test_a_1013_close_mid_stream_is_an_error_that_says_why(fake):
    server = fake(lag_after_frames=10)
    with pytest.raises(LiveClosedError, match="1013.*session_lagging") as caught:
        stream(server.url, tone(1.0), finish_timeout=10)
    result = caught.value.result
    assert caught.value.code == 1013 and result.closed_reason == "session lagging"
    assert [e["code"] for e in result.errors()] == ["session_lagging"] and not result.complete
    assert len(server.seen[0].frames) == 10


def test_a_busy_server_is_an_error_that_says_why(fake):
    server = fake(busy=True)
    with pytest.raises(LiveClosedError, match="server_busy") as caught:
        stream(server.url, tone(0.2), finish_timeout=10)
    assert caught.value.code == 1013 and caught.value.result.frames == 0


def test_a_refused_session_update_sends_no_audio(fake):
    server = fake(refuse_update=True)
    with pytest.raises(LiveError, match="session.update: invalid_value"):
        stream(server.url, tone(0.2), door="openai", finish_timeout=10)
    assert server.seen[0].frames == []


def test_unknown_door_or_format():
    with pytest.raises(ValueError, match="door"):
        stream("ws://127.0.0.1:9", tone(0.1), door="grpc")
    with pytest.raises(ValueError, match="input_format"):
        stream("ws://127.0.0.1:9", tone(0.1), input_format="opus")


def test_the_sagemaker_sdk_path_says_what_it_needs():
    """aws-sdk-sagemaker-runtime-http2 needs Python >= 3.12: not installable here, and said so."""
    with pytest.raises(RuntimeError, match="aws-sdk-sagemaker-runtime-http2"):
        client.stream_sagemaker_endpoint("endpoint", "us-east-1", tone(0.1))


# ---- the command line ---------------------------------------------------------------------------


def _flac(path, samples: np.ndarray):
    """A FLAC file (lossless, and not a WAV: the CLI reads what ffmpeg reads)."""
    import subprocess

    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1",
                    "-i", "pipe:", "-c:a", "flac", str(path)], input=samples.astype("<i2").tobytes(), check=True)
    return path


def test_cli_prints_each_turns_deltas_on_a_line_then_its_transcript(fake, tmp_path, capsys):
    from serve.live.__main__ import main

    server = fake(vad_at_bytes=10 * FRAME)
    samples = tone(0.5, seed=5)
    flac = _flac(tmp_path / "clip.flac", samples)
    assert main([str(flac), "--url", server.url, "--fast", "--language", "en", "--segments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [" one two three", " one two three"]  # item_vad's deltas, then item_commit's
    assert [line.split("] ", 1)[1] for line in lines[2:]] == ["one two three (item_commit)",
                                                               "one two three (item_vad)"]
    session = server.seen[0].events[0][1]["session"]
    assert session["audio"]["input"]["transcription"] == {"language": "en"} and session["whisper"] == {
        "segments": True}
    assert bytes(server.seen[0].audio) == samples.tobytes()  # decoded by ffmpeg, sent as it was


def test_cli_says_when_the_server_is_busy(fake, tmp_path, capsys):
    from serve.live.__main__ import main

    server = fake(busy=True)
    assert main([str(_flac(tmp_path / "clip.flac", tone(0.2))), "--url", server.url]) == 1
    assert "try again later" in capsys.readouterr().err
