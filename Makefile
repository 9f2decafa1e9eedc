# Set-up is part of every target: a fresh machine needs only python3 (3.11+) and make.
VENV ?= .venv
PY := $(VENV)/bin/python
# This machine image carries a CPU build of torch 2.13.0 on disk; elsewhere pip fetches the
# default (CUDA) build. Override, e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
REFERENCE := ltx-core==1.0.0 ltx-pipelines==1.0.0

.PHONY: serve test test-fast install lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	# The reference implementation for tests/parity; --no-deps: it declares torchaudio, which has no
	# build for this torch and which the compared code never calls (tests/parity/ltx_reference.py).
	$(PY) -m pip install -q --no-deps $(REFERENCE)
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/ltx-server serve $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

# Unit + integration tiers without the slow marks (no live servers, no parity run): a check in a minute.
test-fast: $(VENV)/.installed
	$(PY) -m pytest tests/unit tests/integration -m "not slow" $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check pipeline server tools tests bench

bench: $(VENV)/.installed
	$(PY) bench/run_all

# The pure-Python wheels (and imageio-ffmpeg's bundled ffmpeg) that the lent GPU machine's image
# lacks, for bench/gpu_check.py there: it has torch, transformers, accelerate, safetensors,
# tokenizers, huggingface_hub, numpy and Pillow, and no network. ~39 MiB (limit: 64 with the tree).
# imageio-ffmpeg 0.6.0: 29 MiB where 0.8.x is 68. The run command is in BENCHMARKS.md ("GPU check").
GPU_WHEELS := diffusers==0.42.1 importlib_metadata==10.2.0 imageio-ffmpeg==0.6.0 pydantic==2.14.4 \
	pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64

.PHONY: gpu-bundle
gpu-bundle:
	rm -rf .whl && mkdir -p .whl
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	du -sh .whl
