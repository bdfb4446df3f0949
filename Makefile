# The two commands: `make demo` and `make test`. Both install what is missing first
# (system packages, the virtualenv, the Kafka and Debezium jars) and are quick the second time.
# `make demo` installs only what the demo runs: no Chromium (the board's browser test) and no
# test or bench packages (pytest, selenium, matplotlib).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SAGA := $(VENV)/bin/saga
PYTEST_ARGS ?=

.PHONY: demo test deps stack-deps venv runtime-venv jars stack-jars up down status clean unit

# Java, Maven, PostgreSQL's server binaries; `deps` adds Chromium and its driver for the tests.
stack-deps:
	@scripts/system-deps.sh --without-browser

deps:
	@scripts/system-deps.sh

# The project and what it runs on (`pip install -e .`); .installed adds the test extras.
$(VENV)/.runtime: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed: $(VENV)/.runtime
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

runtime-venv: $(VENV)/.runtime

venv: $(VENV)/.installed

stack-jars: stack-deps runtime-venv
	@$(SAGA) stack install

jars: deps venv
	@$(SAGA) stack install

demo: stack-jars
	@$(PY) -m saga_cli.demo

# The suite brings the stack (and the services) up itself and stops what it started. With
# SAGA_STACK=containers it runs against compose.yaml (tests/support/containers.py), which needs
# neither Java, Maven nor the jars: only the virtualenv.
TEST_NEEDS := $(if $(filter containers,$(strip $(SAGA_STACK))),venv,jars)

test: $(TEST_NEEDS)
	@$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	@$(PY) -m pytest -m unit -q

up: jars
	@$(SAGA) up

down:
	@$(SAGA) down

status:
	@$(SAGA) status

clean: down
	rm -rf .stack
