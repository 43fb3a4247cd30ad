#!/usr/bin/env bash
# Stream an audio file (at real-time pace) or the microphone to a running server
# (local_test/serve_local.sh) over WebSockets, and print the words as they arrive.
#
#   local_test/live.sh FILE|mic [options...]
#
# Options go to `python -m serve.live` (see --help), e.g. --door openai,
# --format pcmu, --language en, --segments, --fast. URL defaults to
# ws://127.0.0.1:${PORT:-8080}; WHISPER_API_KEY, when set, is sent as the
# Bearer token. The microphone needs the sounddevice package; Ctrl-C ends it.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 FILE|mic [--door sagemaker|openai] [--format pcm16|pcm24|pcmu|pcma] [options...]" >&2
    exit 2
fi
source=$1
shift
if [[ $source != mic && ! -f $source ]]; then
    echo "$0: no such file: $source" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z $python ]]; then
    # the environment local_test/setup_env.sh makes, else whatever python3 is on PATH
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
# the package is importable from wherever this is run; relative paths stay the caller's
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"

exec "$python" -m serve.live "$source" --url "${URL:-ws://127.0.0.1:${PORT:-8080}}" "$@"
