# Two entry points, each setting everything up on a fresh machine:
#   make demo   -> the main job: Expire-Span PPO learns Lethe/Corridor-v0 through its length
#                  curriculum (about 3 minutes on 2 CPU cores), heatmaps and report in runs/demo
#   make test   -> lint + the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lethe-installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, only where missing: a bare requirement could pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train_rl.py --run-dir runs/demo --overwrite
	$(PY) train_rl.py analyze runs/demo --episodes 10

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# One torch thread per process: the tests run many small ops, where threads only contend,
# and the learning tests' numbers are deterministic for a given thread count.
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/memory_scaling.py

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
