# ltkit — set-up, tests, demo, benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LTKIT  := $(VENV)/bin/ltkit
FMNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: install lint check test test-slow demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@# Debian's real Fashion-MNIST, where apt-get is usable; skipped quietly elsewhere.
	@if [ ! -d $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || true; \
	fi

lint: install
	$(PY) -m ruff check ltkit tests benchmarks

# The developer loop: lint, then every test but the e2e ones (subprocesses, shell examples,
# torchrun, real kills); the in-process pipeline test stays in. About 90 s on 2 idle cores.
check: lint
	$(PY) -m pytest -q -m "not slow and not gpu and not e2e"

# What CI runs: lint, then the whole suite but the slow and GPU tests (about 9 min on 2 cores).
test: lint
	$(PY) -m pytest -q -m "not slow and not gpu"

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	bash examples/fashion_mnist_lt.sh

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs/demo .pytest_cache
