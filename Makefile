# quant_assets: the commands a user needs. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export QUANT_ASSETS_LAKE ?= $(CURDIR)/.lake
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1
# Servers listen on loopback only; `make ui BIND_HOST=0.0.0.0` exposes them, deliberately.
BIND_HOST ?= 127.0.0.1

.PHONY: install browser demo test lint ui mlflow backfill status bench validate-deploy clean

# torch==2.13.0 first: it is the CPU wheel on this disk; nothing else may pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) browser

# Debian's Chromium for the browser test (quant_assets_tests/ui), driven by Playwright through
# /usr/bin/chromium; never Playwright's own browser download. Installed only when missing and only
# as root (CI, a fresh machine); otherwise the browser test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		(apt-get install -y -q --no-install-recommends chromium fonts-liberation >/dev/null 2>&1 \
		 || (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium fonts-liberation >/dev/null)) \
		&& echo "installed $$(/usr/bin/chromium --version 2>/dev/null)"; \
	fi

demo: $(STAMP)  ## the whole loop on 4 months: raw, features, models, gates, promotion, paper trading, monitoring
	$(VENV)/bin/quant-assets demo

test: $(STAMP) browser  ## lint, architecture contracts, the whole suite
	$(VENV)/bin/ruff check quant_assets quant_assets_tests benchmarks
	$(VENV)/bin/ruff format --check quant_assets quant_assets_tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -n 2 --timeout 900 quant_assets_tests

lint: $(STAMP)
	$(VENV)/bin/ruff format quant_assets quant_assets_tests benchmarks
	$(VENV)/bin/ruff check --fix quant_assets quant_assets_tests benchmarks

# quant_assets.ui prepares DAGSTER_HOME and runs `dagster dev` in-process from it (no warning about the
# repo-root dagster.yaml template), stoppable by SIGTERM even when started in the background; exec:
# the signal reaches it, not a shell.
ui: $(STAMP)  ## Dagster webserver + daemon on http://127.0.0.1:3000
	exec $(PY) -m quant_assets.ui dagster dev -h $(BIND_HOST) -p 3000

mlflow: $(STAMP)  ## MLflow UI on http://127.0.0.1:5000 over the embedded store (.mlflow/)
	mkdir -p .mlflow/artifacts
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.mlflow/mlflow.db \
		--default-artifact-root $(CURDIR)/.mlflow/artifacts -h $(BIND_HOST) -p 5000

backfill: $(STAMP)  ## every layer from 2018-01 to the running month, one run per layer
	$(VENV)/bin/quant-assets backfill

status: $(STAMP)  ## lake tables, model partitions, candidates and gates, champions, paper PnL
	$(VENV)/bin/quant-assets status

bench: $(STAMP)  ## benchmarks: print measured figures
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

validate-deploy: $(STAMP)  ## offline checks of docker/ and deploy/k8s/: compose, kustomize, K8s schemas, instance configs
	$(VENV)/bin/pytest -q quant_assets_tests/deploy/test_compose.py quant_assets_tests/deploy/test_k8s_manifests.py \
		quant_assets_tests/deploy/test_training_pod.py quant_assets_tests/deploy/test_instance_config.py

clean:
	rm -rf .lake .dagster_home
