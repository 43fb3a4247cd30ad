"""``python -m deploy``: the same CLI as the ``whisper-deploy`` console script."""

from .cli import main

raise SystemExit(main())
