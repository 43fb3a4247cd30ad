"""One real-time invocation, as InvokeEndpoint sends it, in one command.

    python -m localmodes.realtime audio.mp3 --start-server --accept text/vtt
    python -m localmodes.realtime audio.mp3 --endpoint http://127.0.0.1:8080

The same as ``curl --data-binary @audio.mp3 -H 'Content-Type: audio/mpeg'
http://127.0.0.1:8080/invocations``, plus starting the server when asked,
so the README can show each of the three modes as one command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import requests

from deploy.content_types import content_type_for

from .server import Container, add_server_args, server_from_args


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localmodes.realtime", description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, help="an audio or video file")
    add_server_args(p)
    p.add_argument("--accept", default="application/json")
    p.add_argument("--content-type", default="auto", help="'auto' guesses it from the extension")
    p.add_argument("--custom-attributes", help="e.g. language=en;word_timestamps=true")
    p.add_argument("--timeout", type=float, default=60.0, help="InvokeEndpoint allows 60 s")
    args = p.parse_args(argv)

    content_type = content_type_for(args.file.name) if args.content_type == "auto" else args.content_type
    server = server_from_args(args)
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
