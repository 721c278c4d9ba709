# Each target does its own set-up: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	@# pip byte-compiles on one core; compileall -j 0 on all of them (16 s of a 70 s set-up on 2 cores).
	@# It fails only on files for newer Pythons in torch's own tests, which pip skips too: ignored (-).
	-$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
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
