# The two set-up commands: `make demo` and `make test`. Each builds .venv by itself.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# First interpreter >= 3.12 found: $(PYTHON) if given, then python3.13, python3.12, pyenv's, python3.
PYTHON_CANDIDATES := $(PYTHON) python3.13 python3.12 \
	$(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) python3
FOUND_PYTHON := $(shell for p in $(PYTHON_CANDIDATES); do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null && { command -v $$p; break; }; done)

.PHONY: demo test lint bench notebook clean venv browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(FOUND_PYTHON)" ]; then \
		echo "error: shadow needs Python >= 3.12 (mitmproxy 12 does), and none was found." >&2; \
		echo "       Tried: $(PYTHON_CANDIDATES)" >&2; \
		echo "       Install one, or run: make PYTHON=/path/to/python3.12 test" >&2; exit 2; fi
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then \
		echo "note: .venv was built with Python < 3.12; rebuilding it"; rm -rf $(VENV); fi
	@[ -x $(PY) ] || $(FOUND_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The spark extra (pyspark, ≈ 450 MB) only for the tests and who asks: `make demo` stays light.
SPARK_STAMP := $(VENV)/.spark-installed
$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

demo: $(STAMP)
	$(VENV)/bin/shadow demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) $(SPARK_STAMP) lint browser
	$(VENV)/bin/pytest -q

# The live view's browser tests (tests/test_web_browser.py) drive Debian's chromium through Playwright's
# driver (the pip wheel ships it; Playwright's own browser download is never used). Installed once,
# as root; where that is impossible the browser tests skip and say why.
BROWSER_PACKAGES := chromium chromium-driver fonts-dejavu-core
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing $(BROWSER_PACKAGES) for the live view's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } \
		|| echo "note: could not install chromium (needs root and apt-get); tests/test_web_browser.py will skip" >&2

bench: $(STAMP)
	$(PY) bench/gateway.py

# Jupyter Lab on notebooks/, reading the sample capture; `make notebook SHADOW_CAPTURE=DIR` for your own.
SHADOW_CAPTURE ?= $(CURDIR)/data/demo-capture
# Jupyter refuses to start as root without --allow-root (containers and CI machines often are root).
JUPYTER_AS_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)
notebook: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,notebook]'
	SHADOW_CAPTURE='$(SHADOW_CAPTURE)' $(VENV)/bin/jupyter lab notebooks/ $(JUPYTER_AS_ROOT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
