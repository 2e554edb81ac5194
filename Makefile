# Two entry points: `make serve` and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: serve test install install-test install-bench lint bench clean

serve: install
	$(VENV)/bin/llamafoundry serve $(ARGS)

test: install-test
	$(PY) -m pytest $(ARGS)

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

$(VENV)/.installed: pyproject.toml scripts/install.sh $(wildcard src/llamafoundry/hardware/*.py)
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/install.sh
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml scripts/install-test.sh scripts/install-browser.sh
	VENV=$(VENV) bash scripts/install-test.sh
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml scripts/install-bench.sh
	VENV=$(VENV) bash scripts/install-bench.sh
	touch $@

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install-bench
	$(PY) bench/engine_throughput.py $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
