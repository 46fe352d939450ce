# Every target bootstraps .venv on first use (and again when pyproject.toml changes).
#
# TORCH_SPEC picks the PyTorch build. torch==2.13.0 is a CUDA build on a Linux GPU machine
# (from PyPI) and the CPU build on machines that carry a local CPU wheel; override it for
# anything else, e.g.  make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.calibtut-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast book lab bench lint clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)  ## train baseline, hard and soft on the synthetic default and write runs/demo/report.md
	$(BIN)/calibtut demo

test: $(STAMP)  ## the whole test suite: unit tests, notebooks (papermill) and the browser test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without notebooks, the browser and training runs (about 2 minutes)
	$(BIN)/python -m pytest -m "not notebook and not browser and not slow" $(PYTEST_ARGS)

book: $(STAMP)  ## execute the whole course and render it to build/book/index.html (BOOK_ARGS=--smoke: a quick check)
	$(BIN)/python -m calibtut.book $(BOOK_ARGS)

lab: $(STAMP)  ## JupyterLab on the course
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb

bench: $(STAMP)  ## speed and memory tables (benchmarks/)
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_methods.py
	$(BIN)/python benchmarks/bench_widgets.py
	$(BIN)/python benchmarks/bench_data.py

lint: $(STAMP)
	$(BIN)/ruff check calibtut tests benchmarks notebooks
	$(BIN)/ruff format --check calibtut tests benchmarks notebooks

clean-venv:
	rm -rf $(VENV)
