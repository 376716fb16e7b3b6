"""Running existing runs again, under each policy, end to end through `backfill run`.

Ported from apache/airflow tests/jobs/test_backfill_job.py (2.x):
test_backfill_rerun_failed_tasks, test_backfill_rerun_upstream_failed_tasks,
test_backfill_rerun_failed_tasks_without_flag and
test_backfill_rerun_succeeded_tasks. Airflow sets the TI states by hand; here
a real first backfill makes them: `a` fails on the dates whose switch is on,
so `b` (downstream) ends upstream_failed and `c` (beside) succeeds. Then the
switches are turned off and a second backfill of the same dates runs with:

- no flag (`--reprocess none`): existing runs are skipped, nothing runs
  (DESIGN follows Airflow 3 here; Airflow 2 raised on the failed TIs);
- `--rerun-failed-tasks`: only the failed and upstream_failed TIs run again,
  on failed runs; a successful run is left alone;
- `--reprocess failed`: the unsuccessful TIs of failed runs run again;
- `--reprocess completed`: every TI of every run runs again.

What ran again is read from the ledger, with its exact try numbers: a rerun
is a new try (Airflow's clear), so a failed `a` runs try 2 and the never-run
`b` its try 1.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from support.ledger import Key
from support.processes import Cli
from support.waiting import wait_until

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 3  # two held by the in-flight test's first backfill, one for its second
DAG_ID = "parity_rerun"


def _first_backfill(
    stack: ParityStack, db: Engine, cli: Cli, dates: list[str], failing: list[str]
) -> None:
    """Backfill `dates` with `a` failing on `failing`; then turn every switch off."""
    for ds in failing:
        stack.switch_on(f"{DAG_ID}.a.{ds}")
    done = cli("run", DAG_ID, "-s", dates[0], "-e", dates[-1])
    for ds in failing:
        stack.switch_off(f"{DAG_ID}.a.{ds}")
    assert done.code == (1 if failing else 0), done.log
    found = observe.states(db, DAG_ID)
    for ds in dates:
        d = day(ds)
        expected = ("failed", "upstream_failed") if ds in failing else ("success", "success")
        assert (found["a", d], found["b", d], found["c", d]) == (*expected, "success"), ds


def _rerun(
    cli: Cli, stack: ParityStack, dates: list[str], *flags: str
) -> tuple[int, set[Key], str]:
    """Backfill `dates` again with `flags`: exit code, the tries it started, its output."""
    before = len(observe.started(stack.ledger, DAG_ID))
    done = cli("run", DAG_ID, "-s", dates[0], "-e", dates[-1], *flags)
    new = observe.started(stack.ledger, DAG_ID)[before:]
    assert len(new) == len(set(new)), f"a try started twice: {new}"
    return done.code, set(new), done.output


def _dry_run(cli: Cli, dates: list[str], *flags: str) -> list[dict[str, Any]]:
    """The runs of `backfill run --dry-run --output json` (which writes nothing)."""
    done = cli("run", DAG_ID, "-s", dates[0], "-e", dates[-1], *flags, "--dry-run", "-o", "json")
    assert done.code == 0, done.log
    runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
    return runs


def _keys(*tries: tuple[str, str, int]) -> set[Key]:
    return {(DAG_ID, task, day(ds), n) for task, ds, n in tries}


def _run_states(db: Engine, dates: list[str]) -> dict[datetime, str]:
    wanted = {day(ds) for ds in dates}
    return {r.logical_date: r.state for r in observe.runs(db, DAG_ID) if r.logical_date in wanted}


def test_without_a_rerun_flag_existing_runs_are_skipped(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    dates = ["2016-01-01", "2016-01-02"]
    _first_backfill(stack, db, cli, dates, failing=["2016-01-01"])
    before = observe.states(db, DAG_ID)

    plan = _dry_run(cli, dates)
    assert [(r["action"], r["task_ids"]) for r in plan] == [("skip", [])] * 2
    assert all("already exists" in r["reason"] for r in plan), plan

    code, ran, output = _rerun(cli, stack, dates)
    assert code == 0, output
    assert ran == set()
    assert "nothing to run" in output
    assert observe.states(db, DAG_ID) == before


def test_rerun_failed_tasks_runs_failed_and_upstream_failed_tis_again(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    dates = ["2016-02-01", "2016-02-02"]
    _first_backfill(stack, db, cli, dates, failing=["2016-02-01"])
    plan = _dry_run(cli, dates, "--rerun-failed-tasks")
    assert [(r["action"], r["task_ids"]) for r in plan] == [("reprocess", ["a", "b"]), ("skip", [])]

    code, ran, output = _rerun(cli, stack, dates, "--rerun-failed-tasks")
    assert code == 0, output
    # a failed (try 1 -> try 2), b was upstream_failed (never ran: try 1); c and
    # the successful run of 2016-02-02 are not touched.
    assert ran == _keys(("a", "2016-02-01", 2), ("b", "2016-02-01", 1))
    assert _run_states(db, dates) == {day(ds): "success" for ds in dates}

    # Nothing failed is left: the same command now runs nothing.
    code, ran, output = _rerun(cli, stack, dates, "--rerun-failed-tasks")
    assert (code, ran) == (0, set()), output


def test_reprocess_failed_runs_the_unsuccessful_tis_of_failed_runs_again(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    dates = ["2016-03-01", "2016-03-02"]
    _first_backfill(stack, db, cli, dates, failing=["2016-03-01"])

    code, ran, output = _rerun(cli, stack, dates, "--reprocess", "failed")
    assert code == 0, output
    assert ran == _keys(("a", "2016-03-01", 2), ("b", "2016-03-01", 1))
    assert _run_states(db, dates) == {day(ds): "success" for ds in dates}
    tis = observe.tis(db, DAG_ID)
    assert tis["c", day("2016-03-01")].try_number == 1  # succeeded: not run again


def test_reprocess_completed_runs_every_ti_again(stack: ParityStack, db: Engine, cli: Cli) -> None:
    dates = ["2016-04-01", "2016-04-02"]
    _first_backfill(stack, db, cli, dates, failing=["2016-04-01"])

    conf = {"again": True}
    code, ran, output = _rerun(
        cli, stack, dates, "--reprocess", "completed", "--conf", json.dumps(conf)
    )
    assert code == 0, output
    assert ran == _keys(
        ("a", "2016-04-01", 2),
        ("b", "2016-04-01", 1),
        ("c", "2016-04-01", 2),
        ("a", "2016-04-02", 2),
        ("b", "2016-04-02", 2),
        ("c", "2016-04-02", 2),
    )
    assert _run_states(db, dates) == {day(ds): "success" for ds in dates}
    # Reprocessed in place: one run per date, now the second backfill's, with its conf.
    second = observe.backfill_rows(db, DAG_ID)[-1].id
    wanted = {day(d) for d in dates}
    reprocessed = [r for r in observe.runs(db, DAG_ID) if r.logical_date in wanted]
    assert [(r.backfill_id, r.conf) for r in reprocessed] == [(second, conf)] * 2


def test_runs_in_flight_are_skipped_whatever_the_policy(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    # A first backfill holds its runs of 2016-01-01 and 2016-01-02 in flight.
    first = cli.start("run", "parity_inflight", "-s", "2016-01-01", "-e", "2016-01-02")
    wait_until(
        lambda: len(observe.started(stack.ledger, "parity_inflight")) == 2,
        timeout=60,
        what="the first backfill's two tries to start",
    )
    try:
        dates = ["2016-01-01", "2016-01-02", "2016-01-03"]
        flags = ("--reprocess", "completed", "--dry-run", "-o", "json")
        done = cli("run", "parity_inflight", "-s", dates[0], "-e", dates[-1], *flags)
        assert done.code == 0, done.log
        plan = json.loads(done.stdout)["runs"]
        assert [r["action"] for r in plan] == ["skip", "skip", "run"]
        assert all("in flight" in r["reason"] for r in plan[:2]), plan
        second = cli.start(
            "run", "parity_inflight", "-s", dates[0], "-e", dates[-1], "--reprocess", "completed"
        )
        wait_until(
            lambda: len(observe.started(stack.ledger, "parity_inflight")) == 3,
            timeout=60,
            what="the second backfill's one try to start",
        )
    finally:
        stack.switch_on("parity_inflight.go")
    for running in (first, second):
        finished = running.finish(cli.timeout)
        assert finished.code == 0, finished.log
    # Each date ran once, by the backfill that owns its run.
    started = observe.started(stack.ledger, "parity_inflight")
    assert sorted(started) == [("parity_inflight", "op", day(d), 1) for d in dates]
    first_id, second_id = (b.id for b in observe.backfill_rows(db, "parity_inflight"))
    owners = [r.backfill_id for r in observe.runs(db, "parity_inflight")]
    assert owners == [first_id, first_id, second_id]
