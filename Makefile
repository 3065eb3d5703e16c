# The two commands of the README: `make run` and `make test`.  Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,context]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dpu-emu serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check nvmeof dpu_emu control_api testbeds tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_io.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
