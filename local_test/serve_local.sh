#!/usr/bin/env bash
# Serve the container locally, exactly as SageMaker does.
#
#   local_test/serve_local.sh [MODEL_DIR]
#
# With Docker: runs the image (IMAGE, default whisper-sagemaker:latest) with
# `serve`, MODEL_DIR mounted at /opt/ml/model, and `--gpus all` when the host
# has NVIDIA GPUs. Without Docker (or with NO_DOCKER=1): runs container/serve
# from the project's environment (.venv, else the python3 on PATH) with the
# same settings, on 127.0.0.1 (WHISPER_BIND_HOST to change). No MODEL_DIR: the
# embedded tiny.en. Any WHISPER_* / SAGEMAKER_* / HF_* variable set here is
# passed on.
#
# Ports: the server listens on SAGEMAKER_BIND_TO_PORT (default 8080), as in
# SageMaker. PORT is the port on this machine: Docker publishes the server's
# port there (default: the same number). Without Docker there is one port:
# SAGEMAKER_BIND_TO_PORT, else PORT, else 8080.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model_dir="${1:-}"
server_port="${SAGEMAKER_BIND_TO_PORT:-}"

passthrough=()
while IFS='=' read -r name _; do
    case "$name" in
        SAGEMAKER_BIND_TO_PORT) ;; # set below, for the port the server really uses
        WHISPER_*|SAGEMAKER_*|HF_*) passthrough+=(-e "$name") ;;
    esac
done < <(env)

if [[ ${NO_DOCKER:-0} != 1 ]] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    image="${IMAGE:-whisper-sagemaker:latest}"
    server_port="${server_port:-8080}"
    args=(--rm -p "${PORT:-$server_port}:${server_port}" -e "SAGEMAKER_BIND_TO_PORT=${server_port}")
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        args+=(--gpus all)
    fi
    if [[ -n "$model_dir" ]]; then
        args+=(-v "$(cd "$model_dir" && pwd):/opt/ml/model:ro")
    fi
    echo "docker run ${args[*]} ${passthrough[*]} $image serve" >&2
    exec docker run "${args[@]}" "${passthrough[@]}" "$image" serve
fi

echo "running container/serve from the project environment (no Docker engine, or NO_DOCKER=1)" >&2
if [[ -x "${root}/.venv/bin/python" ]]; then
    export PATH="${root}/.venv/bin:${PATH}"
fi
if [[ -n "$model_dir" ]]; then
    WHISPER_MODEL_DIR="$(cd "$model_dir" && pwd)"
else
    # An empty directory means "no artifact": the embedded default is served.
    WHISPER_MODEL_DIR="${root}/.cache/empty-model-dir"
    mkdir -p "$WHISPER_MODEL_DIR"
fi
export WHISPER_MODEL_DIR
if [[ -n $server_port && -n ${PORT:-} && $PORT != "$server_port" ]]; then
    echo "PORT=$PORT is ignored without Docker: the server listens on SAGEMAKER_BIND_TO_PORT=$server_port" >&2
fi
export SAGEMAKER_BIND_TO_PORT="${server_port:-${PORT:-8080}}"
echo "serving on http://${WHISPER_BIND_HOST:-127.0.0.1}:${SAGEMAKER_BIND_TO_PORT}" >&2
export WHISPER_BIND_HOST="${WHISPER_BIND_HOST:-127.0.0.1}"
export WHISPER_CACHE_DIR="${WHISPER_CACHE_DIR:-${root}/.cache/models}"
exec "${root}/container/serve"
