# make demo: set up .venv, train the packaged model on the demo reviews (120 rows: --method auto runs SetFit's
# contrastive method), evaluate, predict.
# make test: set up .venv and run the test suite.
# make test-portable: the tests of the training and prediction paths again, as on a CPU without bf16.
# make lint: ruff and mypy over src/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.textfit-installed

.PHONY: install demo demo-run test test-portable lint bench clean

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
	$(BIN)/textfit train --data data/demo/reviews.csv --output runs/demo --overwrite
	$(BIN)/textfit eval runs/demo --data data/demo/holdout.csv
	$(BIN)/textfit predict runs/demo "The staff were lovely and the room was spotless." "The battery died after a day and support never replied."

test: install
	$(BIN)/python -m pytest

# The path of a CPU without bf16 (AVX2 only), proven on any machine: MKL, oneDNN and ATen capped to AVX2, so textfit
# trains and predicts in fp32 without its AVX-512 kernels (textfit reads the caps: accel/cpu.py).
PORTABLE_TESTS ?= tests/test_cpu_kind.py tests/test_cpu_attention.py tests/test_cpu_dropout.py tests/test_train.py \
	tests/test_trust.py tests/test_smoke.py tests/test_backends.py tests/test_first_token.py tests/test_methods.py \
	tests/test_run_once.py
test-portable: install
	MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest $(PORTABLE_TESTS)

# ruff (format and lint) and mypy over src/; lines at most 120 characters (pyproject.toml)
lint: install
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache
