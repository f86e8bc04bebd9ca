# Two entry points, both self-contained on a fresh machine:
#   make demo   set up, then distil the shipped CartPole PPO expert and print the result table
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test zoo-check
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Where a CPU build of torch lies on local disk (pip's find-links), take it; elsewhere this step
	# fails fast and the next line lets pip pick the platform's own torch (any >= 2.3 works).
	-$(BIN)/pip install -q --no-index --no-deps "torch==2.13.0" 2>/dev/null
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/policykd distill

test: setup
	$(BIN)/python -m pytest -q

zoo-check: setup
	$(BIN)/python benchmarks/check_zoo.py
