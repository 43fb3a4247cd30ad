"""Things a decoder must never touch, and that tell when it does: a local file, and a loopback HTTP server.

Bodies that reference other files or URLs (playlists, ffconcat lists,
subfile and image2 pattern names) point at these. A test then asserts that
the body was refused, that nothing opened the file or asked the server for
anything, and that the answer does not hold what either would have given
(speech with known words).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from pathlib import Path


class LocalFile:
    """A FIFO at ``path``: whoever opens it for reading is recorded, and receives ``content``.

    A reader's open blocks until a writer comes, so a thread here waits as the
    writer: it returns exactly when something opened the file, with no polling
    and no clock.
    """

    def __init__(self, path: Path, content: bytes):
        self.path = path
        self.content = content
        self.opened = 0
        """Times a reader opened the file."""
        self._closing = False
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            with open(self.path, "wb") as fifo:  # blocks until a reader opens it
                if self._closing:
                    return
                self.opened += 1
                with contextlib.suppress(BrokenPipeError):
                    fifo.write(self.content)

    def close(self) -> None:
        """Stop the writer thread (by opening the file ourselves, which it does not count)."""
        self._closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join(10)
        os.close(fd)


class LoopbackServer:
    """An HTTP server on 127.0.0.1 that records every request and answers ``content`` to each."""

    def __init__(self, content: bytes):
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


class Tripwires:
    """``speech.mp3`` and ``speech001.png`` in ``folder`` (``LocalFile``) and a ``LoopbackServer``, all giving
    ``content``; ``touched()`` says whether anything opened a file or asked the server."""

    NAMES = ("speech.mp3", "speech001.png")

    def __init__(self, folder: Path, content: bytes):
        self.files = [LocalFile(folder / name, content) for name in self.NAMES]
        self.server = LoopbackServer(content)
        self.local = str(self.files[0].path)
        self.url = f"{self.server.url}/speech.mp3"

    def touched(self) -> list[str]:
        return [f"opened {f.path.name}" for f in self.files for _ in range(f.opened)] + \
            [f"GET {path}" for path in self.server.requests]

    def __enter__(self) -> "Tripwires":
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files:
            f.close()
        self.server.close()


def referencing_bodies(local: str, url: str) -> dict[str, bytes]:
    """Bodies that would make a decoder read ``local`` (a path) or ``url`` instead of themselves, by name.

    ``local`` and ``url`` name an MP3 file; the image2 rows name, beside it, a
    pattern whose first match is the other ``Tripwires`` file (``speech%03d.png``
    -> ``speech001.png``).
    """
    def hls(target: str) -> bytes:
        return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n").encode()

    def ffconcat(target: str) -> bytes:
        return f"ffconcat version 1.0\nfile '{target}'\n".encode()

    def subfile(target: str) -> str:
        return f"subfile,,start,0,end,0,,:{target}"

    def pattern(target: str) -> str:
        return target.replace("speech.mp3", "speech%03d.png")

    bodies = {}
    for where, target in (("local", local), ("http", url)):
        bodies[f"hls-{where}"] = hls(target)
        bodies[f"ffconcat-{where}"] = ffconcat(target)
        bodies[f"hls-image2-{where}"] = hls(pattern(target))
        bodies[f"ffconcat-image2-{where}"] = ffconcat(pattern(target))
    bodies["hls-subfile-local"] = hls(subfile(local))
    bodies["ffconcat-subfile-local"] = ffconcat(subfile(local))
    bodies["hls-master-http"] = (f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000\n{url}\n").encode()
    return bodies
