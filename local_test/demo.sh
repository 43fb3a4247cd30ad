#!/usr/bin/env bash
# The README's first command (via `make demo`): start the server on the embedded
# tiny.en at http://127.0.0.1:8080, speak a sample with espeak-ng, transcribe it
# through /invocations, and leave the server running (its pid and log are printed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
port="${PORT:-8080}"
export PORT="$port"
mkdir -p .cache/demo
log=.cache/demo/server.log

if curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null 2>&1; then
    echo "a server already answers on port ${port}: using it"
else
    nohup local_test/serve_local.sh >"$log" 2>&1 &
    echo "server starting (pid $!, log $log)"
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null || { tail -n 30 "$log"; exit 1; }
fi

sample=.cache/demo/sample.mp3
espeak-ng -v en-us -w .cache/demo/sample.wav \
    "Welcome to Whisper on SageMaker. This sample was spoken by a machine and transcribed by the server."
ffmpeg -y -loglevel error -i .cache/demo/sample.wav "$sample"

echo "--- POST /invocations (audio/mpeg, Accept: application/json)"
local_test/predict.sh "$sample" audio/mpeg application/json
echo
echo "--- the same, Accept: text/vtt"
local_test/predict.sh "$sample" audio/mpeg text/vtt
echo "--- the server keeps running on http://127.0.0.1:${port}; stop it with: pkill -f 'gunicorn --config ${root}/container/gunicorn_conf.py'"
