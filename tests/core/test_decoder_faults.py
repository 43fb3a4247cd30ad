"""Decoder faults through the real scheduler, in-process: the request fails at once with our side's error
(503 + Retry-After), and leaves no thread behind.

(ffmpeg killed mid-decode, and bodies naming other files, go through the real server in
tests/test_server_integrity.py.)
"""

from __future__ import annotations

import threading

import pytest

from serve.errors import ServiceFaultError
from serve.http.errors import status_of
from tests import speech
from tests.ffmpeg_switch import FfmpegSwitch

HANG_GUARD_S = 120
"""Only for a request that never ends (the bug): no bound on how fast anything is."""


@pytest.fixture
def engine(named_engine):
    return named_engine("ctranslate2")


def _cutters() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("cut-")}


def test_a_scratch_disk_that_fails_fails_the_request(engine, minute_clip, tmp_path):
    """The request's PCM file on a full disk (/dev/full: every write is ENOSPC, even as root)."""
    (tmp_path / "audio.pcm").symlink_to("/dev/full")
    job = engine.submit(minute_clip.path, tmp_path)
    with pytest.raises(ServiceFaultError, match=r"scratch disk \(No space left on device\)") as err:
        job.wait(timeout=HANG_GUARD_S)
    assert status_of(err.value) == 503 and err.value.retry_after_s
    assert job.result is None


def test_a_decoder_that_cannot_start_fails_the_request_at_once(engine, tmp_path, monkeypatch):
    """Popen raises (here: Exec format error; EMFILE or ENOMEM alike): the request fails then, not at its
    timeout, its cutter thread ends, and the next request is served."""
    switch = FfmpegSwitch(tmp_path / "bin", "broken")
    monkeypatch.setenv("PATH", switch.env()["PATH"])
    (tmp_path / "job").mkdir()
    job = engine.submit(speech.speak(speech.SENTENCES[0], fmt="flac").path, tmp_path / "job")  # not a 16 kHz WAV
    with pytest.raises(ServiceFaultError, match=r"could not start \(Exec format error\)") as err:
        job.wait(timeout=HANG_GUARD_S)
    assert status_of(err.value) == 503
    for thread in threading.enumerate():  # it ends once it has seen the fault
        if thread.name == f"cut-{job.id}":
            thread.join(HANG_GUARD_S)
    assert f"cut-{job.id}" not in _cutters(), "the request's cutter thread was left waiting for audio"

    switch.set("real")
    clip = speech.speak(speech.SENTENCES[1])
    (tmp_path / "next").mkdir()
    heard = engine.submit(clip.path, tmp_path / "next").wait(timeout=HANG_GUARD_S)
    assert speech.wer([clip.text], [heard.text]) <= speech.MAX_CLIP_WER, heard.text
