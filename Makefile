# Two commands set everything up on a fresh machine: `make sweep` (the main job) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MLFLOW_URI ?= sqlite:///mlflow.db
UI_PORT ?= 5000

.PHONY: setup data test run sweep smoke ui bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'" >&2; exit 2; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,robustness]"
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package (IDX files under /usr/share/datasets/fashion-mnist).
data: $(FASHION)
$(FASHION):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

test: setup
	$(PY) -m pytest -q

run: setup
	$(PY) -m imlca run sweeps/default.yaml

sweep: setup
	$(PY) -m imlca sweep sweeps/embedded.yaml

smoke: setup
	$(PY) -m imlca sweep sweeps/smoke.yaml

ui: setup
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT) (Ctrl-C to stop)"
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port $(UI_PORT)

bench: setup
	$(PY) -m imlca bench

clean:
	rm -rf outputs ray_results mlruns
