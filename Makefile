# The two commands of the README: `make demo` and `make test`. Both create or update the local virtual
# environment first, so they work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile -q

.PHONY: demo test test-slow test-all venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mbi-predict demo --out runs/demo

test: $(STAMP)
	$(PYTEST) -m "not slow"

# pytest exits 5 when no test carries the mark; that is not a failure here.
test-slow: $(STAMP)
	$(PYTEST) -m slow || test $$? -eq 5

test-all: $(STAMP)
	$(PYTEST)

clean:
	rm -rf runs mlflow.db .pytest_cache
