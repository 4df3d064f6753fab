# The two commands: `make demo` (set up, then run the demo) and `make test` (set up, then run every test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo demo-simulated test test-unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/coopsched demo

demo-simulated: $(VENV)/.installed
	$(BIN)/coopsched demo --simulated

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/unit

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/placement_latency.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
