#!/usr/bin/env bash
# Make .venv-sdk: AWS's bidirectional streaming SDK (aws-sdk-sagemaker-runtime-http2, Python >= 3.12), where
# tests/live/test_sagemaker_sdk.py runs serve/live/client.py's stream_sagemaker_endpoint through a stand-in
# for SageMaker's router (tests/live/sagemaker_router.py). Idempotent: a second run only checks.
#
# Apart from .venv: the SDK needs Python 3.12 or newer, the project runs on 3.11. The Python is $SDK_PYTHON,
# else python3.12 / python3.13 on PATH, else one of pyenv's. The [awscrt] extra is the SDK's HTTP/2 transport,
# the only one that streams both ways; hypercorn and trustme serve the router (HTTP/2, TLS, a throwaway CA).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-sdk
stamp=$venv/.installed
if [ -f "$stamp" ] && [ ! local_test/sdk_env.sh -nt "$stamp" ]; then
  echo "environment ready: $venv"
  exit 0
fi

is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
python=""
for candidate in ${SDK_PYTHON:-} python3.12 python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python; do
  if is_312 "$candidate"; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  echo "sdk-env: no Python 3.12 or newer (AWS's SDK needs it): set SDK_PYTHON, or install python3.12" >&2
  exit 1
fi
[ -x $venv/bin/python ] || "$python" -m venv $venv
$venv/bin/python -m pip install -q --upgrade pip
$venv/bin/python -m pip install -q "aws-sdk-sagemaker-runtime-http2[awscrt]==0.12.0" numpy "websockets>=13" \
  "hypercorn>=0.17" "trustme>=1.1"
$venv/bin/python -m pip check
$venv/bin/python -c "import aws_sdk_sagemaker_runtime_http2, smithy_http.aio.crt, hypercorn, trustme, numpy, websockets"
touch "$stamp"
echo "environment ready: $venv ($($venv/bin/python -V))"
