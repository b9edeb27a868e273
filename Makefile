# Two commands for a fresh machine (see README):
#   make demo   set everything up, then run the main job (the default SAM benchmark)
#   make test   set everything up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first and pinned for every later install, so no
# dependency can pull a CUDA build. On a GPU machine: make TORCH_SPEC=torch==2.13.0 ...
TORCH_SPEC ?= torch==2.13.0
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-slow collect-slow bench-sam docs clean ipex-env test-ipex test-floor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[all]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/fastpipes info
	$(BIN)/fastpipes recipes list
	$(BIN)/fastpipes bench sam --device cpu --json bench-out/sam.json --markdown bench-out/sam.md --plot bench-out/sam.png

test: setup
	$(BIN)/python -m pytest -q

# the heavy checks (real shapes, end-to-end compiles): minutes each, run with the benchmarks
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# CI's guard against slow tests rotting unseen: they must at least collect (imports at the
# top of their files resolve, markers and fixtures exist); seconds, nothing heavy runs
collect-slow: setup
	$(BIN)/python -m pytest -q --collect-only -m slow

docs: setup
	$(BIN)/python -m fastpipes.cli.recipe_docs > docs/recipe-reference.md

# A second, opt-in environment for Intel Extension for PyTorch, whose last release (2.8) needs
# torch 2.8.*: every package pinned in constraints-ipex.txt, installed with --no-deps (so
# torch's CUDA-only dependencies stay out) and with that file, not constraints.txt, as the
# constraint. Never built by setup/test; never touches $(VENV). See docs/passes/ipex.md.
IPEX_VENV ?= .venv-ipex
IPEX_BIN := $(IPEX_VENV)/bin
IPEX_PIP := PIP_CONSTRAINT=$(CURDIR)/constraints-ipex.txt $(IPEX_BIN)/python -m pip

$(IPEX_VENV)/.installed: constraints-ipex.txt pyproject.toml
	test -x $(IPEX_BIN)/python || $(PYTHON) -m venv $(IPEX_VENV)
	$(IPEX_PIP) install -q --no-deps -r constraints-ipex.txt
	$(IPEX_PIP) install -q --no-deps --no-build-isolation -e .
	$(IPEX_BIN)/python -c "import sys, torch, fastpipes.hardware as hw; ipex, why = hw.import_ipex(); \
		sys.exit(why) if ipex is None else print('torch', torch.__version__, '+ ipex', ipex.__version__)"
	touch $@

ipex-env: $(IPEX_VENV)/.installed

# the tests marked `ipex`: the real IPEX on tiny SAM, SDXL and Llama models
test-ipex: ipex-env
	$(IPEX_BIN)/python -m pytest -q -m ipex

# the default suite on the lowest versions fastpipes supports (torch 2.8, transformers 4.51)
test-floor: ipex-env
	$(IPEX_BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(IPEX_VENV) build dist *.egg-info bench-out
