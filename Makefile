# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch is installed first, pinned, so nothing pulls a CUDA build on a CPU machine. Extra pip arguments for
# it (e.g. a CPU-only package index on a machine where the plain wheel is a CUDA build) go in TORCH_PIP_ARGS.
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup setup-test demo test test-fast bench bench-others clean

# Two stamps: the runtime dependencies (all `make demo` needs), then the test extra (pytest, Ray, diffusers) on top.
setup: $(VENV)/.installed-run
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

demo: setup
	$(BIN)/smoothcert demo

test: setup-test
	$(BIN)/python -m pytest -q -ra

test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow"

# The README's Benchmarks figures: certify against the forward-pass ceiling, and one input's certify call.
bench: setup
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/per_call.py --threads 1

# Side by side with Cohen et al.'s loop and IBM ART (installed here only, for the benchmark; its certify imports
# statsmodels).
bench-others: setup
	$(BIN)/python -m pip install "adversarial-robustness-toolbox==1.20.1" statsmodels
	$(BIN)/python benchmarks/vs_others.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
