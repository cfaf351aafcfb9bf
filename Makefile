# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export NO_ALBUMENTATIONS_UPDATE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_HTTP_REQUEST_MAX_RETRIES ?= 1

.PHONY: demo test lint clean

# The venv, the package (editable) and its pinned dependencies.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

# The same plus the test tools.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/augment run configs/digits.yaml

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check augment flows tests benchmarks examples
	$(BIN)/ruff format --check augment flows tests benchmarks examples

clean:
	rm -rf runs mlruns.db mlartifacts .pytest_cache
