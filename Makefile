# The two fresh-machine commands are `make demo` and `make test` (see README).
.PHONY: setup demo serve test bench lint

setup:
	./local_test/setup_env.sh

demo: setup
	./local_test/demo.sh

serve: setup
	./local_test/serve_local.sh

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python bench/engines.py
	.venv/bin/python bench/server_latency.py
	.venv/bin/python bench/memory.py

lint: setup
	.venv/bin/hadolint Dockerfile
	.venv/bin/shellcheck build_and_push.sh container/serve local_test/*.sh
