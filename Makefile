# Each target does its own set-up: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)   ## the whole job on the embedded default: synthetic data, local Ray, runs/demo
	$(BIN)/headrot run --config configs/demo.yaml $(ARGS)

test: $(STAMP)   ## the whole suite, Ray and S3 tests included
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)  ## every benchmark; writes bench/results/*.json and BENCHMARKS.md
	$(BIN)/python -m bench.all $(ARGS)

clean:
	rm -rf runs .pytest_cache
