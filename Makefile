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

## The main job on its embedded default: train the DRIVE CNF on the synthetic retina set, evaluate it, draw the
## picture (image, samples, mean, std, PR curve) and say where everything is. A small synthetic set and short epochs
## (DEMO_OVERRIDES) keep it within a few minutes on 2 CPU cores.
DEMO_EPOCHS ?= 3
DEMO_OVERRIDES ?= -o synthetic_num_train=6 -o synthetic_num_test=2 -o 'synthetic_size=[256,256]' -o num_val=1 \
	-o train\#batch_size=2 -o patches_per_image=2 -o train\#epoch_length=50 -o warmup_steps=10 \
	-o val_interval=$(DEMO_EPOCHS) -o num_samples=4 -o learning_rate=0.002
demo: install
	@# the demo folder is scratch: start it afresh so `make demo` can be rerun (cnf train never overwrites a run)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	MLFLOW_DISABLE_TELEMETRY=true $(CNF) train bundles/drive_vessel --preset cpu --max-epochs $(DEMO_EPOCHS) \
		--run-dir $(DEMO_DIR)/run --tracking-uri sqlite:///$(DEMO_DIR)/mlruns.db $(DEMO_OVERRIDES)
	MLFLOW_DISABLE_TELEMETRY=true $(CNF) evaluate bundles/drive_vessel --run-dir $(DEMO_DIR)/run \
		--tracking-uri sqlite:///$(DEMO_DIR)/mlruns.db --num-samples 8
	@echo "The picture (image, samples, mean and std, PR curve):"
	@$(PY) -m monai_cnf.bundle.demo $(DEMO_DIR)/run --bundle bundles/drive_vessel
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
