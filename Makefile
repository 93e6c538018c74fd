# Two commands on a fresh machine:  `make quickstart`  (main job)  and  `make test`  (the test suite).
# Both install .venv from the lock first (scripts/install_env.sh: every package at its locked version, ~15 s the
# first time, ~1 s when nothing changed). GPU machines: `make env LOCK=requirements/lock-cuda.txt` (requirements/).
VENV ?= .venv
LOCK ?= requirements/lock-cpu.txt
PYTHON ?= python3
NOX := $(VENV)/bin/nox

.PHONY: env quickstart test lint bench lock

env:
	VENV=$(VENV) LOCK=$(LOCK) PYTHON=$(PYTHON) scripts/install_env.sh

quickstart: env
	$(NOX) -s quickstart

test: env
	$(NOX) -s tests

lint: env
	$(NOX) -s lint

bench: env
	$(NOX) -s bench

lock: env
	$(NOX) -s lock
