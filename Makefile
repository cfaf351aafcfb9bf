# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export NO_ALBUMENTATIONS_UPDATE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_HTTP_REQUEST_MAX_RETRIES ?= 1

.PHONY: demo test lint clean

# Installing the pinned set: uv unpacks wheels in parallel (35 s against pip's 150 s on 2 cores, torch's
# CUDA wheel included; benchmarks/RESULTS.md), so it is fetched into the venv first; where it cannot be
# had, pip does the same install. uv reads no pip.conf: the indexes and wheel folders pip is configured
# with (the local copies of torch and torchvision) are handed to it. Hardlinks from uv's cache instead of
# copies: 4.3 GB of torch and CUDA libraries are written once, not twice (20-24 s against 34-40 s with a
# cold cache; uv copies by itself where the cache is on another file system).
PIP_INDEXES := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
PIP_LINKS   := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_ENV := UV_LINK_MODE=hardlink UV_INDEX_STRATEGY=unsafe-best-match \
	$(if $(PIP_INDEXES),UV_EXTRA_INDEX_URL="$(PIP_INDEXES)") $(if $(PIP_LINKS),UV_FIND_LINKS="$(PIP_LINKS)")
define install
	if $(PIP) install --quiet uv >/dev/null 2>&1 && test -x $(BIN)/uv; then \
	  $(UV_ENV) $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt $(1); \
	else \
	  $(PIP) install --quiet --upgrade pip && $(PIP) install --quiet -c constraints.txt $(1); \
	fi
endef

# The venv, the package (editable) and its pinned dependencies.
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "make: gan-augment needs Python 3.11 (torch 2.14.1's local wheels are built for it); $(PYTHON) is" \
	    "$$($(PYTHON) --version 2>&1 || echo missing). Run: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install,-e .)
	touch $@

# The same plus the test tools, every module compiled to bytecode once (~23 s): the tests start dozens
# of Python processes, and where PYTHONDONTWRITEBYTECODE is set (as on these machines; it also turns uv's
# --compile-bytecode into a no-op) each would compile torch's, Prefect's and MLflow's modules again
# (the whole suite from a fresh clone: 946 s before, 506 s after). compileall writes regardless; the one file it cannot
# compile is torch's test helper written in Python 3.12 syntax, never imported on 3.11.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(call install,-e '.[dev]')
	$(BIN)/python -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics\.py' \
	  "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
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
