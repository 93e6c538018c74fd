# Two commands on a fresh machine:  `make quickstart`  (main job)  and  `make test`  (the test suite).
# Both create .venv on first use and install the project with its dev extras, pinned by constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
NOX := $(VENV)/bin/nox
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: quickstart test lint bench env

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

quickstart: $(STAMP)
	$(NOX) -s quickstart

test: $(STAMP)
	$(NOX) -s tests

lint: $(STAMP)
	$(NOX) -s lint

bench: $(STAMP)
	$(NOX) -s bench
