#!/usr/bin/env bash
# Local batch transform: every audio file under INPUT becomes OUTPUT/<relative path>.out,
# sent to the container server exactly as a SageMaker transform job sends it.
#
#   local_test/batch_local.sh INPUT OUTPUT [extra options...]
#
# INPUT and OUTPUT are folders or s3:// prefixes. Without --endpoint, the
# container server is started for the job (container/serve, embedded tiny.en
# unless WHISPER_MODEL_DIR says otherwise). Extra options go to
# `python -m localmodes.batch_transform` (see --help), e.g. --accept text/vtt.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 INPUT OUTPUT [--endpoint URL] [--accept TYPE] [options...]" >&2
    exit 2
fi
input=$1
output=$2
shift 2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z $python ]]; then
    # the environment local_test/setup_env.sh makes, else whatever python3 is on PATH
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
# the package is importable from wherever this is run; relative paths stay the caller's
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"

target=(--start-server --backend "${WHISPER_BACKEND:-ctranslate2}")
for arg in "$@"; do
    if [[ $arg == --endpoint || $arg == --endpoint=* ]]; then
        target=()
    fi
done

exec "$python" -m localmodes.batch_transform --input "$input" --output "$output" \
    --accept "${ACCEPT:-text/plain}" "${target[@]}" "$@"
