# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with Python 3.11 and install the project into it on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint ui sandbox bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/buffalo demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check buffalo_assets tests bench airflow

ui: $(STAMP)
	$(BIN)/buffalo dev

sandbox: $(STAMP)
	$(BIN)/buffalo sandbox

clean:
	-$(BIN)/buffalo db stop
	rm -rf $(VENV) .buffalo
