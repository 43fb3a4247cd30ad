#!/usr/bin/env bash
# Make .venv-pyannote: CPU torch and pyannote.audio 4, for the pyannote wiring test
# (tests/diarization/test_pyannote.py runs it there). Idempotent: a second run only checks.
#
# Apart from .venv: pyannote.audio brings some 40 packages (lightning, optuna,
# opentelemetry...) the server does not need, and torchaudio, whose only wheel on
# the registry is a CUDA build whose compiled extension does not load beside CPU
# torch. pyannote uses only torchaudio's pure-Python parts (compliance.kaldi.fbank
# for WeSpeaker's features, functional.resample), and torchaudio imports without its
# lib/*.so (its loader skips a library that is absent), so those files are removed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-pyannote
python="${PYTHON:-python3}"
stamp=$venv/.installed
if [ -f "$stamp" ] && [ ! local_test/pyannote_env.sh -nt "$stamp" ]; then
  echo "environment ready: $venv"
  exit 0
fi
[ -x $venv/bin/python ] || "$python" -m venv $venv
$venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned (the version .venv runs): a bare "torch" would pull a CUDA build.
$venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
$venv/bin/python -m pip install -q "pyannote.audio==4.0.7" "torchaudio==2.11.1"
rm -f $venv/lib/python3*/site-packages/torchaudio/lib/*.so
$venv/bin/python -m pip check
$venv/bin/python -c "import pyannote.audio, torchaudio.compliance.kaldi"
touch "$stamp"
echo "environment ready: $venv"
