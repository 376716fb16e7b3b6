# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test stress lint format bench bench-quick chaos clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/backfill dags show example_bash_operator
	$(BIN)/backfill run example_bash_operator -s 2016-01-01 -e 2016-01-03 --reprocess completed

# Two processes, a test file each at a time (module-scoped workers and databases stay
# in one process): most tests wait on real workers, not on the CPU.
TEST_PROCESSES ?= 2

test: install
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile

# The connection storm of tests/integration/test_outages.py, 25 rounds per driver.
stress: install
	BACKFILL_STORM_ROUNDS=25 $(BIN)/pytest tests/integration/test_outages.py -m storm -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# What users run, against raw Celery on the same broker and workers (~15-25 min);
# figures in .backfill/bench.json, logs in .backfill/bench/logs/. Subsets: --only a,b,...
bench: install
	$(BIN)/python -m benchmarks.bench

# (a), (b), (d) at smaller sizes on one worker shape, no (e): for iteration (< 3 min).
bench-quick: install
	$(BIN)/python -m benchmarks.bench --quick

# The fault matrix (README "Running on a fleet"): every fault against real workers,
# coordinators, PostgreSQL and Redis, 1,000 TIs a row (~11 min); the table is
# printed, and written to .backfill/chaos.json. Subsets: --only a,b; small: --quick.
chaos: install
	$(BIN)/python -m chaos

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .backfill .pytest_cache .mypy_cache .ruff_cache
