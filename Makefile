# The README's two commands, and the set-up they share.
# Set-up from nothing: a virtual environment in .venv, torch 2.13.0 (CPU wheel), torch-cluster
# compiled against it (no build isolation; minutes the first time, then pip's cached wheel), and
# stgraph in editable mode. Each step leaves a stamp, so a second call skips what is done.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_VERSION         := 2.13.0
TORCH_CLUSTER_VERSION := 1.6.3

.PHONY: setup test demo bench lint docs clean

setup: $(VENV)/.stamp-stgraph

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.stamp-torch: | $(BIN)/python
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.stamp-torch-cluster: $(VENV)/.stamp-torch
	@echo "building torch-cluster against torch $(TORCH_VERSION) (minutes the first time; cached afterwards)"
	$(BIN)/pip install --quiet --no-build-isolation torch-cluster==$(TORCH_CLUSTER_VERSION)
	$(BIN)/python -c "import torch_cluster, torch; print('torch-cluster', torch_cluster.__version__, 'on torch', torch.__version__)"
	touch $@

$(VENV)/.stamp-stgraph: $(VENV)/.stamp-torch-cluster pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# A reduced real benchmark (configs/bench/demo.yaml): runs resume, so a second call only reprints.
demo: setup
	$(BIN)/stgraph benchmark configs/bench/demo.yaml --out outputs/demo --workers 2

# The full suites behind benchmarks/results/{uci12,aqi36}.md (both side by side: under 2 h on 2 CPU cores).
# The step-budget suites (issue "learning that pays"), each from one clean code version; resumable.
bench: setup
	$(BIN)/python benchmarks/suite_report.py configs/bench/uci12.yaml --out outputs/bench/uci12_steps --result benchmarks/results/uci12.md --notes benchmarks/notes/uci12.md
	$(BIN)/python benchmarks/suite_report.py configs/bench/aqi36_steps.yaml --out outputs/bench/aqi36_steps_v3 --result benchmarks/results/aqi36_steps.md --notes benchmarks/notes/aqi36_steps.md
	$(BIN)/python benchmarks/suite_report.py configs/bench/aqi36_krige.yaml --out outputs/bench/aqi36_krige --result benchmarks/results/aqi36_krige.md --notes benchmarks/notes/aqi36_krige.md

# The documentation site (mkdocs.yml, docs/), built strictly into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check stgraph tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf outputs .pytest_cache site
