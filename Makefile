# Conveyor: one entry point. `make run` = the platform on embedded defaults; `make test` = the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
SYSTEM_PACKAGES ?= bubblewrap redis-server chromium chromium-driver docker-compose
export PYTHONUNBUFFERED := 1
# llama-cpp-python compiles here: a portable AVX2 build, not -march=native, which on hosts with AMX (Sapphire
# Rapids) turns on ggml's AMX kernels, and those crashed in the first multi-token decode on this project's
# machines (segmentation fault, llama-cpp-python 0.3.36).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install system-deps run test test-containers up down bench lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || { py=$$(command -v $(PYTHON) || command -v python3); \
	  $$py -c 'import sys; sys.exit(not (3, 11, 5) <= sys.version_info < (3, 12))' || { \
	    echo "Conveyor needs Python 3.11.5 or a newer 3.11 (pins such as soupsieve 4.1 require it);" \
	      "$$py is $$($$py -V 2>&1): make PYTHON=/path/to/python3.11 ..."; exit 1; }; \
	  $$py -m venv $(VENV); }
	@echo "installing Conveyor into $(VENV) (first time: several minutes; llama-cpp-python compiles); log: $(VENV)/install.log"
	@{ $(BIN)/pip install torch==2.13.0 && $(BIN)/pip install -c constraints.txt -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Debian packages the tests use (bubblewrap: the sandbox for model code; redis-server: the shared rate-limit
# store when Redis is configured; headless Chromium for the chat page;
# docker-compose checks the compose file, no engine needed); installed only when missing.
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (install them as root): $$missing"; fi; fi

run: install
	$(BIN)/python -m flows.end_to_end

# The lint gate, the suite, then (as root, unless CONTAINERS=0) the images built and run for real.
test: install system-deps lint
	$(BIN)/python -m pytest --durations=20  # the slowest tests, for the CI time budget
	@if [ "$$(id -u)" = 0 ] && [ "$(CONTAINERS)" != 0 ]; then $(MAKE) --no-print-directory test-containers; \
	else echo "container images: not built (needs root; CONTAINERS=0 skips)"; fi

# Container images built and run for real: a private root dockerd (Debian docker.io), mmdebstrap bases (Python;
# PostgreSQL for compose), wheels built on the host; then tests/test_images.py with the running-container tests
# and tests/test_compose.py with the whole compose stack up (Debian's docker-compose), enabled.
test-containers: install
	@missing=$$(for p in docker.io mmdebstrap docker-compose; do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@trap 'deployments/docker/build.sh clean' EXIT; deployments/docker/build.sh all && \
	  CONVEYOR_TEST_CONTAINERS=1 DOCKER_HOST=unix://$(CURDIR)/.conveyor/docker/docker.sock \
	  $(BIN)/python -m pytest tests/test_images.py tests/test_compose.py

up: install
	$(BIN)/conveyor up

down:
	@if [ -x $(BIN)/conveyor ]; then $(BIN)/conveyor down; else echo "nothing to stop"; fi

bench: install
	$(BIN)/python -m bench $(ONLY)

# ruff (lint + format) on the whole tree; mypy on the library layers (pyproject.toml [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: down
	rm -rf .conveyor
