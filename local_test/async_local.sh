#!/usr/bin/env bash
# Local async endpoint: an InvokeEndpointAsync service in front of the container server.
#
#   local_test/async_local.sh serve  [extra options...]   # start it (Ctrl-C to stop)
#   local_test/async_local.sh invoke AUDIO [extra options...]  # send one file, wait, print the result
#
# State lives in ASYNC_DIR (default ./async-local): the sqlite queue, outputs
# in out/, failures in fail/, notifications in notifications.jsonl. Without
# --endpoint, `serve` starts the container server too. Extra options go to
# `python -m localmodes.async_endpoint serve|invoke` (see --help).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z $python ]]; then
    # the environment local_test/setup_env.sh makes, else whatever python3 is on PATH
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
# the package is importable from wherever this is run; relative paths stay the caller's
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
dir="$(mkdir -p "${ASYNC_DIR:-async-local}" && cd "${ASYNC_DIR:-async-local}" && pwd)"
port="${ASYNC_PORT:-8081}"

command=${1:-}
shift || true
case "$command" in
    serve)
        target=(--start-server --backend "${WHISPER_BACKEND:-ctranslate2}")
        for arg in "$@"; do
            if [[ $arg == --endpoint || $arg == --endpoint=* ]]; then
                target=()
            fi
        done
        exec "$python" -m localmodes.async_endpoint serve "${target[@]}" --port "$port" \
            --output "$dir/out" --failure "$dir/fail" --db "$dir/queue.sqlite" \
            --notify "file:$dir/notifications.jsonl" "$@"
        ;;
    invoke)
        if [[ $# -lt 1 ]]; then
            echo "usage: $0 invoke AUDIO [options...]" >&2
            exit 2
        fi
        audio=$1
        shift
        exec "$python" -m localmodes.async_endpoint invoke --service "http://127.0.0.1:$port" \
            --input "$audio" --wait "$@"
        ;;
    *)
        echo "usage: $0 serve|invoke ..." >&2
        exit 2
        ;;
esac
