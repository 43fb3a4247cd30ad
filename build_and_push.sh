#!/usr/bin/env bash
# Build the Whisper SageMaker image for linux/amd64, push it to ECR, print its URI.
#
#   ./build_and_push.sh NAME [TAG]        (TAG defaults to latest)
#
# The AWS calls (STS account, ECR repository, login token) go through our own
# Python tool (`python -m deploy`, boto3), so they honour AWS_ENDPOINT_URL and are
# tested against moto; only docker build/tag/push need Docker.
#
# Environment:
#   AWS_REGION / AWS_DEFAULT_REGION   region; else `aws configure get region` if the CLI exists
#   AWS_ENDPOINT_URL                  send the AWS calls elsewhere (tests: a local moto server)
#   BAKED_MODEL, BAKED_BACKEND        build args: bake a named model into the image
#   DRY_RUN=1                         print the docker commands instead of running them
#                                     (the AWS calls still run: the repository is created)
#   PYTHON                            interpreter with boto3 (default python3)
#
# stdout carries only the image URI; progress goes to stderr.
#
# Needs Docker with BuildKit (the buildx plugin): the Dockerfile's COPY --chmod and
# --provenance exist only there. Without buildx, `docker build` falls back to the
# legacy builder, which stops at "unknown flag: --provenance"; DOCKER_BUILDKIT=1
# turns that into a plain "the buildx component is missing", checked before any
# AWS call.
set -euo pipefail
export DOCKER_BUILDKIT=1

usage() {
    echo "usage: $0 NAME [TAG]" >&2
    exit 2
}

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || usage
name=$1
tag=${2:-latest}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
dry_run=${DRY_RUN:-0}

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
if [ -z "$region" ] && command -v aws >/dev/null 2>&1; then
    region=$(aws configure get region || true)
fi
if [ -z "$region" ]; then
    echo "$0: no region: set AWS_REGION or AWS_DEFAULT_REGION, or run 'aws configure'" >&2
    exit 1
fi

if [ "$dry_run" != 1 ] && ! docker buildx version >/dev/null 2>&1; then
    echo "$0: docker build needs BuildKit (the Dockerfile uses COPY --chmod): install the docker buildx plugin" >&2
    echo "    (docker-buildx-plugin from Docker's apt repository; Ubuntu also packages it as docker-buildx)" >&2
    exit 1
fi

# Our deploy tool, importable from this checkout whether or not it is installed.
deploy() {
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m deploy --region "$region" "$@"
}

# Run a docker command, or show it (shell-quoted) when DRY_RUN=1.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+' >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
    else
        "$@" >&2
    fi
}

account=$(deploy account)
echo "account $account, region $region" >&2

image=$(deploy ecr-repository "$name" --tag "$tag")
registry=${image%%/*}

if [ "$dry_run" = 1 ]; then
    echo "+ docker login --username AWS --password-stdin $registry  (password: whisper-deploy ecr-login-password)" >&2
else
    deploy ecr-login-password | docker login --username AWS --password-stdin "$registry" >&2
fi

# --provenance=false: SageMaker rejects the OCI index that BuildKit's attestations produce.
run docker build \
    --platform linux/amd64 \
    --provenance=false \
    --build-arg "BAKED_MODEL=${BAKED_MODEL:-}" \
    --build-arg "BAKED_BACKEND=${BAKED_BACKEND:-ctranslate2}" \
    --tag "$name:$tag" \
    "$here"
run docker tag "$name:$tag" "$image"
run docker push "$image"

echo "$image"
