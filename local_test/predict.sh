#!/usr/bin/env bash
# Send one audio file to a running server (local_test/serve_local.sh) and print the answer.
#
#   local_test/predict.sh FILE [CONTENT_TYPE] [ACCEPT]
#
# CONTENT_TYPE defaults to application/octet-stream (the server sniffs the bytes);
# ACCEPT to application/json (also text/plain, text/vtt, application/x-subrip,
# text/tab-separated-values). Parameters go in CUSTOM_ATTRIBUTES, for example
# CUSTOM_ATTRIBUTES='language=en;word_timestamps=true'. URL defaults to
# http://127.0.0.1:${PORT:-8080}.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 FILE [CONTENT_TYPE] [ACCEPT]" >&2
    exit 2
fi
file=$1
content_type="${2:-application/octet-stream}"
accept="${3:-application/json}"
url="${URL:-http://127.0.0.1:${PORT:-8080}}"

if [[ ! -f "$file" ]]; then
    echo "$0: no such file: $file" >&2
    exit 2
fi

headers=(-H "Content-Type: ${content_type}" -H "Accept: ${accept}")
if [[ -n "${CUSTOM_ATTRIBUTES:-}" ]]; then
    headers+=(-H "X-Amzn-SageMaker-Custom-Attributes: ${CUSTOM_ATTRIBUTES}")
fi

# --fail-with-body: a 4xx/5xx prints the JSON error and exits non-zero.
exec curl --silent --show-error --fail-with-body "${headers[@]}" \
    --data-binary "@${file}" "${url}/invocations"
