# Two commands for a new user (see README.md):  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CNF := $(VENV)/bin/cnf
# torch 2.13.0 first: an unpinned torch (or a dependency's) would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= runs/demo

.PHONY: install label-env demo test lint bench clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## MONAI Label's own environment (.venv-label; torch 2.14.1 + torchvision, ~8 GB): see docs/monailabel.md
label-env: install
	bash scripts/monailabel_env.sh

## The main job on its embedded default: train the DRIVE CNF on the synthetic retina set, evaluate it,
## and say where the results are.
demo: install
	@# the demo folder is scratch: start it afresh so `make demo` can be rerun (cnf train never overwrites a run)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	MLFLOW_DISABLE_TELEMETRY=true $(CNF) train bundles/drive_vessel --preset cpu --max-epochs 2 \
		--run-dir $(DEMO_DIR) --tracking-uri sqlite:///$(DEMO_DIR)/mlruns.db
	MLFLOW_DISABLE_TELEMETRY=true $(CNF) evaluate bundles/drive_vessel --preset cpu \
		--run-dir $(DEMO_DIR) --tracking-uri sqlite:///$(DEMO_DIR)/mlruns.db
	@echo "Browse the runs with:  $(CNF) ui --tracking-uri sqlite:///$(DEMO_DIR)/mlruns.db"

test: install
	$(PY) -m ruff check .
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -q

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: install
	$(PY) -m pip install -e ".[bench]"
	$(PY) benchmarks/flow_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
