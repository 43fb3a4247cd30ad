"""One real-time invocation, as InvokeEndpoint sends it, in one command.

    python -m localmodes.realtime audio.mp3 --start-server --accept text/vtt
    python -m localmodes.realtime audio.mp3 --endpoint http://127.0.0.1:8080

The same as ``curl --data-binary @audio.mp3 -H 'Content-Type: audio/mpeg'
http://127.0.0.1:8080/invocations``, plus starting the server when asked,
so the README can show each of the three modes as one command.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional

import requests

from .batch_transform import guess_content_type
from .server import Container, started_server


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localmodes.realtime", description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, help="an audio or video file")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="URL of a running container server, e.g. http://127.0.0.1:8080")
    target.add_argument("--start-server", action="store_true", help="start container/serve for this request")
    p.add_argument("--backend", help="WHISPER_BACKEND for --start-server")
    p.add_argument("--accept", default="application/json")
    p.add_argument("--content-type", default="auto", help="'auto' guesses it from the extension")
    p.add_argument("--custom-attributes", help="e.g. language=en;word_timestamps=true")
    p.add_argument("--timeout", type=float, default=60.0, help="InvokeEndpoint allows 60 s")
    args = p.parse_args(argv)

    content_type = guess_content_type(args.file.name) if args.content_type == "auto" else args.content_type
    server = started_server(args.backend) if args.start_server else contextlib.nullcontext(args.endpoint)
    try:
        with server as url, requests.Session() as session:
            response = Container(url).invoke(session, args.file, content_type, args.accept,
                                             args.custom_attributes, args.timeout)
    except (OSError, RuntimeError, TimeoutError, requests.RequestException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (sys.stdout if response.ok else sys.stderr).write(response.text.rstrip("\n") + "\n")
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
