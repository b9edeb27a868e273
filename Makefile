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

.PHONY: setup demo test test-slow bench-sam docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
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

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

docs: setup
	$(BIN)/python -m fastpipes.cli.recipe_docs > docs/recipe-reference.md

clean:
	rm -rf $(VENV) build dist *.egg-info bench-out
