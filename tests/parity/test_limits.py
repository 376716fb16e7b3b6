"""Pools, concurrency limits and max_active_runs, end to end through `backfill run`.

Ported from apache/airflow tests/jobs/test_backfill_job.py (2.x):
test_backfill_respect_pool_limit, test_backfill_respect_default_pool_limit,
test_backfill_respect_dag_concurrency_limit,
test_backfill_respect_task_concurrency_limit (8 dates of a one-task DAG: the
limit is never exceeded AND reached at least once), test_backfill_pool_not_found
(here refused before anything is written, exit 2; a pool too small for a
task's pool_slots is reported as a deadlock) and the max_active_runs
tests (here a rolling window, DESIGN "Deliberate differences"); on both
backends. Two backfills sharing a pool: test_shared_pool.py.

"At once" is measured twice: from the ledger (the callables' own start/end,
`time.monotonic()`), which must REACH the limit, and from the TIs' start/end
dates the workers wrote (claim to outcome, a superset of the callable's
run), which must never EXCEED it. Runs are measured from the run rows'
start/end dates, written by the coordinator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from integration.checks import set_pool
from sqlalchemy.engine import Engine
from support.processes import Cli

from . import observe
from .conftest import ParityStack
from .observe import day, max_overlap

BACKENDS = ("postgresql", "sqlite")
WORKERS = 4
EIGHT_DAYS = ("-s", "2016-01-01", "-e", "2016-01-08")


def test_pool_limit_is_never_exceeded_and_reached(stack: ParityStack, db: Engine, cli: Cli) -> None:
    created = cli("pools", "set", "parity_two", "2")
    assert created.code == 0, created
    done = cli("run", "parity_pool", *EIGHT_DAYS)
    assert done.code == 0, done.log
    observe.assert_all_ran_once(stack.ledger, db, "parity_pool", 8)
    assert {t.pool for t in observe.tis(db, "parity_pool").values()} == {"parity_two"}
    ledger_peak, rows_peak = observe.peaks(stack.ledger, db, "parity_pool")
    assert ledger_peak == 2, "the 2-slot pool was never full"
    assert rows_peak <= 2, "more than 2 tries ran at once in the 2-slot pool"


def test_pool_slots_count_toward_the_pool(stack: ParityStack, db: Engine, cli: Cli) -> None:
    set_pool(db, "parity_three", 3)
    done = cli("run", "parity_slots", "-s", "2016-01-01", "-e", "2016-01-04")
    assert done.code == 0, done.log
    observe.assert_all_ran_once(stack.ledger, db, "parity_slots", 8)
    slots = {"heavy": 2, "light": 1}
    spans = observe.spans(stack.ledger, ["parity_slots"])
    ledger = [(begin, end, slots[key[1]]) for key, (begin, end) in spans.items()]
    rows = [
        (t.start_date.timestamp(), t.end_date.timestamp(), slots[t.task_id])
        for t in observe.tis(db, "parity_slots").values()
        if t.start_date and t.end_date
    ]
    assert observe.max_load(ledger) == 3, "the 3-slot pool was never full"
    assert observe.max_load(rows) <= 3, "running tries held more than the pool's 3 slots"


def test_pool_too_small_for_a_tasks_pool_slots_is_reported(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    set_pool(db, "parity_two", 2)
    done = cli("run", "parity_too_big", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 1, done.log
    assert "parity_too_big/op/2016-01-01" in done.stdout
    assert "pool_slots" in done.stdout
    assert "backfill pools set parity_two 3" in done.stdout
    assert observe.started(stack.ledger, "parity_too_big") == []


@pytest.fixture
def small_default_pool(db: Engine) -> Iterator[None]:
    set_pool(db, "default_pool", 2)
    try:
        yield
    finally:
        set_pool(db, "default_pool", 128)  # the other tests of the module use it


@pytest.mark.usefixtures("small_default_pool")
def test_default_pool_limit_is_never_exceeded_and_reached(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_default_pool", *EIGHT_DAYS)
    assert done.code == 0, done.log
    observe.assert_all_ran_once(stack.ledger, db, "parity_default_pool", 8)
    ledger_peak, rows_peak = observe.peaks(stack.ledger, db, "parity_default_pool")
    assert ledger_peak == 2, "default_pool (2 slots) was never full"
    assert rows_peak <= 2, "more than 2 tries ran at once in default_pool (2 slots)"


def test_dag_max_active_tasks_is_never_exceeded_and_reached(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_dag_limit", *EIGHT_DAYS)
    assert done.code == 0, done.log
    observe.assert_all_ran_once(stack.ledger, db, "parity_dag_limit", 8)
    ledger_peak, rows_peak = observe.peaks(stack.ledger, db, "parity_dag_limit")
    assert ledger_peak == 2, "max_active_tasks=2 was never reached"
    assert rows_peak <= 2, "more than max_active_tasks=2 tries ran at once"


def test_task_max_active_tis_per_dag_is_never_exceeded_and_reached(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_task_limit", *EIGHT_DAYS)
    assert done.code == 0, done.log
    observe.assert_all_ran_once(stack.ledger, db, "parity_task_limit", 16)
    ledger_peak, rows_peak = observe.peaks(stack.ledger, db, "parity_task_limit", task_id="op")
    assert ledger_peak == 2, "max_active_tis_per_dag=2 of `op` was never reached"
    assert rows_peak <= 2, "more than max_active_tis_per_dag=2 tries of `op` ran at once"
    # The saturated task held back only itself (Airflow ended the pass: #26078):
    # `free` ran beside it, more tries at once than `op` alone may have.
    everything, _ = observe.peaks(stack.ledger, db, "parity_task_limit")
    assert everything >= 3


def test_unknown_pool_is_refused_before_anything_is_written(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_unknown_pool", "-s", "2016-01-01", "-e", "2016-01-03")
    assert done.code == 2, done.log
    assert "parity_no_such_pool" in done.stderr
    assert "backfill pools set parity_no_such_pool" in done.stderr
    assert "Traceback" not in done.stderr
    assert observe.backfill_rows(db, "parity_unknown_pool") == []
    assert observe.runs(db, "parity_unknown_pool") == []

    # The same for a --pool override naming a pool that does not exist.
    done = cli(
        "run", "parity_pool", "-s", "2016-06-01", "-e", "2016-06-01", "--pool", "parity_nope"
    )
    assert done.code == 2, done.log
    assert "parity_nope" in done.stderr
    assert day("2016-06-01") not in {r.logical_date for r in observe.runs(db, "parity_pool")}


def test_pool_override_puts_every_ti_in_that_pool(stack: ParityStack, db: Engine, cli: Cli) -> None:
    set_pool(db, "parity_one", 1)
    done = cli(
        "run", "parity_default_pool", "-s", "2016-07-01", "-e", "2016-07-03", "--pool", "parity_one"
    )
    assert done.code == 0, done.log
    july = {k: t for k, t in observe.tis(db, "parity_default_pool").items() if k[1].month == 7}
    assert {(t.pool, t.state) for t in july.values()} == {("parity_one", "success")}
    spans = [
        s
        for k, s in observe.spans(stack.ledger, ["parity_default_pool"]).items()
        if k[2].month == 7
    ]
    assert len(spans) == 3
    assert max_overlap(spans) == 1, "more than 1 try ran at once in the 1-slot --pool"


def test_max_active_runs_is_a_rolling_window_never_exceeded(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_runs", "-s", "2016-01-01", "-e", "2016-01-05")
    assert done.code == 0, done.log
    runs = observe.runs(db, "parity_runs")
    assert [r.state for r in runs] == ["success"] * 5
    windows = [(r.start_date.timestamp(), r.end_date.timestamp()) for r in runs]
    assert max_overlap(windows) == 2, "max_active_runs=2 exceeded or never reached"
    # Rolling: runs of later dates started while the long run of 2016-01-02
    # was still going (batches would wait for both of the first two runs).
    long_run = runs[1]
    assert long_run.logical_date == day("2016-01-02")
    rolled = [r.logical_date for r in runs[2:] if r.start_date < long_run.end_date]
    assert rolled, "no run started before all earlier runs had ended"
    # The ledger agrees: some later run's tries ran while 2016-01-02's did.
    ledger = observe.run_windows(stack.ledger, "parity_runs")
    assert max_overlap(ledger.values()) == 2


def test_max_active_runs_option_overrides_the_dag(stack: ParityStack, db: Engine, cli: Cli) -> None:
    done = cli(
        "run", "parity_runs", "-s", "2016-02-01", "-e", "2016-02-03", "--max-active-runs", "1"
    )
    assert done.code == 0, done.log
    runs = [r for r in observe.runs(db, "parity_runs") if r.logical_date.month == 2]
    assert [r.state for r in runs] == ["success"] * 3
    windows = [(r.start_date.timestamp(), r.end_date.timestamp()) for r in runs]
    assert max_overlap(windows) == 1, "--max-active-runs 1 let two runs be active at once"
    # One at a time, oldest first.
    assert [r.logical_date for r in sorted(runs, key=lambda r: r.start_date)] == [
        day("2016-02-01"),
        day("2016-02-02"),
        day("2016-02-03"),
    ]
