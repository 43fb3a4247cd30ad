# The two fresh-machine commands are `make demo` and `make test` (see README).
.PHONY: setup pyannote-env sdk-env demo stop serve test test-live image bench lint

setup:
	./local_test/setup_env.sh

# .venv-pyannote: CPU torch + pyannote.audio 4, where tests/diarization/test_pyannote.py runs the pyannote engine.
pyannote-env:
	./local_test/pyannote_env.sh

# .venv-sdk: Python 3.12, AWS's bidirectional streaming SDK and the stand-in for SageMaker's router, where
# tests/live/test_sagemaker_sdk.py runs serve.live.client.stream_sagemaker_endpoint.
sdk-env:
	./local_test/sdk_env.sh

# Leaves the server running; `make stop` ends it (that server, and nothing else).
demo: setup
	./local_test/demo.sh

stop:
	./local_test/demo.sh stop

serve: setup
	./local_test/serve_local.sh

# The whole suite, tests/test_image.py included: it builds the image, so the
# container tools come first (nothing to install where a Docker engine runs).
test: setup pyannote-env sdk-env
	./local_test/image.sh setup
	.venv/bin/python -m pytest -q

# The live-session tests alone (WebSocket, real server behind nginx); `make test` runs them too.
test-live: setup sdk-env
	.venv/bin/python -m pytest -q tests/live

# The CPU variant of the image, from the repository's Dockerfile (local_test/image.sh).
image: setup
	./local_test/image.sh setup
	./local_test/image.sh build

bench: setup
	test -f .cache/bench-audio/manifest.json || .venv/bin/python bench/throughput.py prepare
	.venv/bin/python bench/throughput.py run
	.venv/bin/python bench/isolation.py --rounds 2
	.venv/bin/python bench/live.py --rounds 2
	.venv/bin/python bench/memory.py

lint: setup
	.venv/bin/hadolint Dockerfile
	.venv/bin/shellcheck build_and_push.sh container/serve local_test/*.sh
