# Two commands set everything up on a fresh machine: `make sweep` (the main job) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where imlca/data/embedded.py looks for Fashion-MNIST: $IMLCA_FASHION_MNIST alone when set, else Debian's folder,
# else the user folder that `make data` fills without root.
FASHION_USER_DIR := $(or $(IMLCA_FASHION_MNIST),$(HOME)/.cache/imlca/fashion-mnist)
FASHION_DIRS := $(if $(IMLCA_FASHION_MNIST),$(IMLCA_FASHION_MNIST),/usr/share/datasets/fashion-mnist $(FASHION_USER_DIR))
MLFLOW_URI ?= sqlite:///mlflow.db
UI_PORT ?= 5000
DOCS_PORT ?= 8000

.PHONY: setup data lock test run sweep smoke ui bench docs docs-serve clean

setup: $(STAMP) data

# This repo's environment: the package's ranges (pyproject.toml) resolved to the exact versions of constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'" >&2; exit 2; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,robustness,docs]"
	touch $(STAMP)

# Rewrite constraints.txt from .venv after a deliberate upgrade or a new dependency (then commit it).
lock:
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -v '^imlca[ =@]'; } > constraints.tmp
	mv constraints.tmp constraints.txt

# Fashion-MNIST ships as Debian's dataset-fashion-mnist (IDX files). As root (CI) it is installed; otherwise the
# package is downloaded and unpacked into FASHION_USER_DIR, no root needed.
data:
	@for d in $(FASHION_DIRS); do [ -f "$$d/t10k-labels-idx1-ubyte.gz" ] && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && [ -z "$(IMLCA_FASHION_MNIST)" ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  tmp=$$(mktemp -d) && cd "$$tmp" && apt-get download dataset-fashion-mnist && \
	  dpkg-deb -x dataset-fashion-mnist_*.deb . && mkdir -p "$(FASHION_USER_DIR)" && \
	  cp usr/share/datasets/fashion-mnist/*.gz "$(FASHION_USER_DIR)/" && rm -rf "$$tmp" && \
	  echo "Fashion-MNIST unpacked into $(FASHION_USER_DIR)"; \
	fi

test: setup
	$(PY) -m pytest -q

run: setup
	$(PY) -m imlca run sweeps/default.yaml

sweep: setup
	$(PY) -m imlca sweep sweeps/embedded.yaml

smoke: setup
	$(PY) -m imlca sweep sweeps/smoke.yaml

ui: setup
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning (Ctrl-C to stop)"
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port $(UI_PORT)

bench: setup
	$(PY) -m imlca bench

# The documentation site (mkdocs.yml): strict, so a broken link or a page outside the nav fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve -a 127.0.0.1:$(DOCS_PORT)

clean:
	rm -rf outputs ray_results mlruns site
