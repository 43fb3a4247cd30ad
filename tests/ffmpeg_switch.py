"""An ``ffmpeg`` first on a server's PATH that a test switches between requests, to inject decoder faults.

The server looks ffmpeg up on its PATH for every request, so what this file
is when a request starts is what that request runs:

* ``real``: the real ffmpeg (what a server needs to warm up);
* ``slow``: the real ffmpeg reading its input at real-time speed (``-re``),
  so a test can strike while it is mid-decode, its first 10 s delivered;
* ``broken``: a file whose exec fails (Exec format error), so starting it
  raises in the server, as an EMFILE or ENOMEM would;
* ``unloadable``, ``out-of-memory``, ``chatty``: stand-ins that say and do
  what ffmpeg does in those cases, for the unit tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import psutil

REAL = shutil.which("ffmpeg")
MODES = {
    "real": f'#!/bin/sh\nexec {REAL} "$@"\n'.encode(),
    "slow": f'#!/bin/sh\nexec {REAL} -re "$@"\n'.encode(),
    "broken": b"\x7fnot an executable\n",
    # ffmpeg exec'd but dead before its first line: what the loader says when it cannot map a library
    "unloadable": b"#!/bin/sh\necho 'ffmpeg: error while loading shared libraries: libavcodec.so.59: "
                  b"failed to map segment from shared object' >&2\nexit 127\n",
    # ffmpeg running out of memory after 2 s of samples
    "out-of-memory": b"#!/bin/sh\nhead -c 64000 /dev/zero\necho '[aac @ 0x5555] [error] Cannot allocate memory' "
                     b">&2\necho '[fatal] Error while decoding stream #0:0: Cannot allocate memory' >&2\nexit 1\n",
    # a whole 2 s of samples under 500,000 lines of complaints (15 MB)
    "chatty": b"#!/bin/sh\nyes '[mp3 @ 0x5555] [warning] a complaint about the input' | head -n 500000 >&2\n"
              b"head -c 64000 /dev/zero\n",
}


class FfmpegSwitch:
    def __init__(self, folder: Path, mode: str = "real"):
        assert REAL, "the tests need ffmpeg on PATH"
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "ffmpeg"
        self.set(mode)

    def set(self, mode: str) -> None:
        """Replace the file at once (a rename): a request never sees half of it."""
        staged = self.folder / f".ffmpeg-{mode}"
        staged.write_bytes(MODES[mode])
        staged.chmod(0o755)
        os.replace(staged, self.path)

    def env(self) -> dict:
        """The variables that put this ffmpeg first on a server's PATH."""
        return {"PATH": f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def ffmpeg_children(pid: int) -> list[psutil.Process]:
    """The ffmpeg processes a process (a server's worker, or this one) runs now."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name() == "ffmpeg" and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def kill_mid_decode(server, still_waiting: Callable[[], bool], guard_s: float = 120.0) -> None:
    """SIGKILL the ffmpeg of the request in flight on ``server`` (a ``ServerHandle``) once its decoded
    audio on disk holds samples. ``still_waiting``: whether the request has no answer yet."""
    deadline = time.monotonic() + guard_s  # only for a request that never decodes: no bound on speed
    while not _decoded_some(server):
        assert time.monotonic() < deadline and still_waiting(), server.request_files()
        time.sleep(0.05)
    (pid,) = server.workers()
    [ffmpeg] = ffmpeg_children(pid)
    ffmpeg.kill()


def _decoded_some(server) -> bool:
    for name in server.request_files():
        if name.endswith("audio.pcm"):
            with contextlib.suppress(FileNotFoundError):
                if (server.tmp_dir / name).stat().st_size:
                    return True
    return False
