# Two commands matter on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
# uv as a module of the machine's Python: works right after `pip install uv`, whatever PATH says.
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
USER ?= demo

.PHONY: install run test test-fast lint format token bench load load-streams lock clean

install: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(BIN)/python || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	@# Compiled once here: this machine's image sets PYTHONDONTWRITEBYTECODE, so without it every
	@# process (the server, each test server) compiled the SDKs again: ~2 s more per start.
	@$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements-dev.lock
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

run: install
	$(BIN)/python -m app

# Two workers, each with its own Postgres cluster; a module stays on one worker (tests/conftest.py).
test: install
	@scripts/ensure-test-deps.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Unit tests only: no database, no server processes, no browser.
test-fast: install
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy --strict app tests

format: install
	$(BIN)/ruff format app tests
	$(BIN)/ruff check --fix app tests

token: install
	@$(BIN)/python -m app.auth.token "$(USER)"

# BASELINE=<git ref>: run that commit beside the working tree, interleaved; ROUNDS=<n> for more.
bench: install
	$(BIN)/python -m tests.bench.turn_overhead $(if $(BASELINE),--baseline $(BASELINE)) $(if $(ROUNDS),--rounds $(ROUNDS)) $(BENCH_ARGS)

load: install
	$(BIN)/python -m tests.load.load_test

# 1,000 simultaneous 30-delta streams on one process (STREAMS=<n> for another count).
load-streams: install
	$(BIN)/python -m tests.load.many_streams $(if $(STREAMS),--streams $(STREAMS))

lock:
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -q -o requirements.lock
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
