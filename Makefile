# The two commands of the README: `make demo` (the main job) and `make test` (the suite);
# every target is described in docs/cli.md.
# Both create .venv with Python 3.11 and install the project into it on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

AIRFLOW_VENV := airflow/.venv
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW2_VENV := airflow/.venv2
AIRFLOW2_STAMP := $(AIRFLOW2_VENV)/.installed
AIRFLOW_HOME ?= $(CURDIR)/.buffalo/airflow
# The Dagster provider (airflow/provider) is a pip package: both Airflow virtualenvs install
# it as an operations team installs it into its Airflow image.
PROVIDER := airflow/provider
PROVIDER_FILES := $(PROVIDER)/pyproject.toml $(wildcard $(PROVIDER)/dagster_provider/*.py)
AIRFLOW_ENV := PATH=$(CURDIR)/$(AIRFLOW_VENV)/bin:$$PATH AIRFLOW_HOME=$(AIRFLOW_HOME) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/airflow/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW_CONN_DAGSTER_DEFAULT=$${AIRFLOW_CONN_DAGSTER_DEFAULT:-$${DAGSTER_URL:-http://127.0.0.1:3000}}

.PHONY: demo test install lock lint ui sandbox clean airflow-venv airflow-venv2 airflow airflow-dag-test screenshots bench-venv

LOCK := constraints.txt

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,deploy]' -c $(LOCK)
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve the whole dependency tree of pyproject.toml into constraints.txt, in a
# throw-away virtualenv: after changing a dependency, or to take newer releases on purpose.
LOCK_VENV := .buffalo/lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev,deploy]'
	head -5 $(LOCK) > $(LOCK).new
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(BIN)/buffalo demo

test: $(STAMP) $(AIRFLOW_STAMP) $(AIRFLOW2_STAMP)
	$(BIN)/python -m pytest

# Airflow has its own virtualenv and pinned requirements: its dependencies and Dagster's
# must not fight.
$(AIRFLOW_STAMP): airflow/requirements.txt airflow/constraints.txt $(PROVIDER_FILES)
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r airflow/requirements.txt -c airflow/constraints.txt
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall ./$(PROVIDER)
	$(AIRFLOW_VENV)/bin/python -m pip check
	@touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

# Airflow 2.11, the oldest supported line, in its own virtualenv: the tests import the DAG
# and run `airflow dags test` on it.
$(AIRFLOW2_STAMP): airflow/requirements-2.11.txt airflow/constraints-2.11.txt $(PROVIDER_FILES)
	@test -x $(AIRFLOW2_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW2_VENV)
	$(AIRFLOW2_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW2_VENV)/bin/python -m pip install --quiet -r airflow/requirements-2.11.txt -c airflow/constraints-2.11.txt
	$(AIRFLOW2_VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall ./$(PROVIDER)
	$(AIRFLOW2_VENV)/bin/python -m pip check
	@touch $(AIRFLOW2_STAMP)

airflow-venv2: $(AIRFLOW2_STAMP)

# Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor) on
# http://127.0.0.1:8080, SQLite under .buffalo/airflow unless AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
# is set, triggering the Dagster webserver at DAGSTER_URL (start it with make ui).
# Exits non-zero as soon as a component cannot start or dies.
airflow: $(AIRFLOW_STAMP)
	$(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/python airflow/supervise.py

# One run of the DAG without the scheduler, as the tests do.
airflow-dag-test: $(AIRFLOW_STAMP)
	$(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/airflow db migrate
	$(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/airflow dags test buffalo_orders $$(date +%Y-%m-%d)

# dlt, the peer `python -m bench.e2e` compares against, in the bench's own virtualenv from
# pinned requirements: a peer, never a dependency of the project.
BENCH_VENV := bench/.venv-dlt
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): bench/requirements-dlt.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements-dlt.txt
	@touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check buffalo_assets tests bench airflow
	$(BIN)/mypy
	$(BIN)/dg check defs

# Refresh the UI screenshots of the documentation (docs/images/) from a real browser; the test suite
# itself never writes tracked files.
screenshots: $(STAMP)
	BUFFALO_SCREENSHOTS_DIR=$(CURDIR)/docs/images $(BIN)/python -m pytest tests/test_stack.py -k browser

# The Dagster UI (and daemon) on http://127.0.0.1:$(PORT): `make ui PORT=3001` for another port.
PORT ?= 3000
ui: $(STAMP)
	$(BIN)/buffalo dev --port $(PORT)

sandbox: $(STAMP)
	$(BIN)/buffalo sandbox

clean:
	-$(BIN)/buffalo db stop
	rm -rf $(VENV) $(AIRFLOW_VENV) $(AIRFLOW2_VENV) $(BENCH_VENV) .buffalo
