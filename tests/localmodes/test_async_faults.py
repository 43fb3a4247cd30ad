"""Decoder faults in an asynchronous invocation, through the real server: a failure notification and the
error in the failure location, never an output or a success notification.

The server's PATH starts with an ffmpeg the tests switch (``tests/ffmpeg_switch.py``); the async
service runs in-process (as in test_async.py), writing to folders and a notification file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from localmodes import async_endpoint
from localmodes.async_endpoint import AsyncService
from localmodes.async_queue import DONE, FAILED
from tests import speech
from tests.ffmpeg_switch import FfmpegSwitch, kill_mid_decode
from tests.localmodes.test_async import running_service
from tests.localmodes.test_support import wait_until
from tests.server_harness import ServerHandle, running_server

WAIT_S = 300


@pytest.fixture(scope="module")
def switch(tmp_path_factory) -> FfmpegSwitch:
    return FfmpegSwitch(tmp_path_factory.mktemp("ffmpeg"))


@pytest.fixture(scope="module")
def server(switch) -> Iterator[ServerHandle]:
    with running_server("ctranslate2", env=switch.env()) as handle:
        yield handle


def assert_failed_with_a_service_fault(tmp_path: Path, service: AsyncService, needle: str) -> None:
    assert service.queue.counts()[DONE] == 0 and service.queue.counts()[FAILED] == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "an output was written"
    [note] = [json.loads(line) for line in (tmp_path / "notes.jsonl").read_text().splitlines()]
    assert note["invocationStatus"] == "Failed" and "outputLocation" not in note, note
    assert "(503)" in note["failureReason"] and needle in note["failureReason"], note
    error = json.loads(Path(note["failureLocation"]).read_text())["error"]
    assert error["type"] == "ServiceUnavailable" and needle in error["message"], error


def test_a_decoder_killed_mid_decode_is_a_failure_notification(server, switch, long_flac, tmp_path):
    """The old server answered 200 with the first seconds' transcript: written as the output, "Completed"."""
    switch.set("slow")
    try:
        with running_service(tmp_path, server.url) as (service, url):
            async_endpoint.invoke(url, str(long_flac.path), inference_id="killed")
            kill_mid_decode(server, lambda: service.queue.counts()[DONE] + service.queue.counts()[FAILED] == 0)
            wait_until(lambda: service.queue.counts()[DONE] + service.queue.counts()[FAILED] == 1, WAIT_S,
                       "the request to end")
            assert_failed_with_a_service_fault(tmp_path, service, "killed (signal 9, SIGKILL)")
    finally:
        switch.set("real")


def test_a_decoder_that_cannot_start_is_a_failure_notification(server, switch, tmp_path):
    """The old server left the request waiting for audio until the server's timeout."""
    switch.set("broken")
    try:
        with running_service(tmp_path, server.url) as (service, url):
            async_endpoint.invoke(url, str(speech.speak(speech.SENTENCES[0], fmt="flac").path), inference_id="unstarted")
            wait_until(lambda: service.queue.counts()[DONE] + service.queue.counts()[FAILED] == 1, WAIT_S,
                       "the request to end")
            assert_failed_with_a_service_fault(tmp_path, service, "could not start (Exec format error)")
    finally:
        switch.set("real")
