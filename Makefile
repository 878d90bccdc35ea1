# The README's two commands: `make demo` and `make test`. Everything else is a step they depend on.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools/bin
STAMP := $(VENV)/.installed-test

.PHONY: demo test check install system-packages kubectl bench fuzz clean compiled test-compiled

$(PY):
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "cannot create a virtual environment: on Debian, apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip

# Pinned to what the image ships (requirements.lock), so tests run against the same versions.
$(STAMP): $(PY) pyproject.toml requirements.lock
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $@

install: $(STAMP)

system-packages:
	tools/install-system.sh

kubectl:
	tools/install-kubectl.sh $(TOOLS)

demo: install
	$(PY) -m webhook demo

# Lint and type-check: ruff (pyflakes, pycodestyle, bugbear, import order) and mypy, at the pinned versions.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: system-packages kubectl install check
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest
	$(MAKE) test-compiled

# The cache's hot path compiled with mypyc as the image has it (pyproject.toml: [tool.localdns] compiled), into
# build/compiled; the cache's tests against it. `make test` runs them after the whole suite on the plain sources.
compiled: install
	$(PY) tools/compile_cache.py build/compiled

test-compiled: compiled
	LOCALDNS_TREE=build/compiled PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest tests/cache

bench: system-packages install
	tools/install-system.sh unbound knot-resolver
	$(PY) -m pip install -q -c requirements.lock -e '.[test,bench]'
	$(PY) -m bench

# Coverage-guided fuzzing (atheris) of the cache's query and answer paths and the webhook's review, FUZZ_SECONDS (60)
# each, one target at a time; crashes in build/fuzz/TARGET/crashes, exit 1 if any. docs/fuzzing.md has the rest.
FUZZ_SECONDS ?= 60
$(VENV)/.installed-fuzz: $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -e '.[test,fuzz]'
	touch $@

fuzz: $(VENV)/.installed-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m fuzz

clean:
	rm -rf $(VENV) .tools .pytest_cache .hypothesis build
