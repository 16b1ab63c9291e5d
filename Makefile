# make demo: set up .venv, fine-tune the packaged model on the demo reviews, evaluate, predict.
# make test: set up .venv and run the test suite.
# make lint: ruff and mypy over src/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.textfit-installed

.PHONY: install demo demo-run test lint bench clean

install: $(STAMP)

# torch first and pinned: the CPU wheel, not the CUDA one a plain 'torch' would pull.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install demo-run

demo-run:
	$(BIN)/textfit train --data data/demo/reviews.csv --epochs 8 --learning-rate 2e-4 --output runs/demo --overwrite
	$(BIN)/textfit eval runs/demo --data data/demo/holdout.csv
	$(BIN)/textfit predict runs/demo "The staff were lovely and the room was spotless." "The battery died after a day and support never replied."

test: install
	$(BIN)/python -m pytest

# ruff (format and lint) and mypy over src/; lines at most 120 characters (pyproject.toml)
lint: install
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache
