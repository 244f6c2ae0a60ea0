# The two commands of the README: `make run` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stcorr-installed
REQS   := requirements/base.txt requirements/dev.txt requirements/constraints.txt pyproject.toml

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/base.txt -r requirements/dev.txt -c requirements/constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job on the embedded default (local Ray, ephemeral Prefect, MLflow on SQLite, local storage).
run: $(STAMP)
	$(BIN)/stcorr run --config pipeline_config.yaml

# The whole test suite. pytest exits 5 when it ran no test; that counts as a failure here too.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test (exit 5): that is a failure" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick --out work/bench/$$(basename $$b .py).json || exit 1; done

clean:
	rm -rf work
