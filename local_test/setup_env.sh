#!/usr/bin/env bash
# Make .venv with everything the server, the tests and the benchmarks need (CPU).
# Idempotent: a second run only checks. The GPU image installs CUDA builds instead (Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:Debian package. nginx fronts gunicorn in container/serve (it lives in /usr/sbin, often off PATH).
need_apt=()
for pair in ffmpeg:ffmpeg espeak-ng:espeak-ng nginx:nginx-light; do
  tool=${pair%%:*}
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "installing ${need_apt[*]} with apt-get"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
echo "environment ready: .venv"
