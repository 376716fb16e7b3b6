# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test stress lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/backfill dags show example_bash_operator
	$(BIN)/backfill run example_bash_operator -s 2016-01-01 -e 2016-01-03 --reprocess completed

test: install
	$(BIN)/pytest

# The connection storm of tests/integration/test_outages.py, 25 rounds per driver.
stress: install
	BACKFILL_STORM_ROUNDS=25 $(BIN)/pytest tests/integration/test_outages.py -m storm -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.bench

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .backfill .pytest_cache .mypy_cache .ruff_cache
