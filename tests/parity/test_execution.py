"""Airflow 2's BackfillJob tests on execution, end to end through `backfill run`.

Ported from apache/airflow tests/jobs/test_backfill_job.py (2.x):
- test_backfill_multi_dates / test_backfill_ordered_concurrent_execute /
  test_backfill_conf: several dates, upstreams first, independent TIs at
  once, and `--conf` reaching every run (as `ctx.conf` and on `dag_runs.conf`);
- test_backfill_retry_intermittent_failed_task: a task failing its first try
  succeeds on its retry, and the backfill succeeds;
- test_backfill_retry_always_failed_task: a task failing every try ends the
  backfill with exit 1 and a report naming it (Airflow: BackfillUnfinished);
  with `--disable-retry` it gets a single try.

Four real workers serve the module (see conftest.py); "ran" is read from the
ledger the callables append to, states from the database.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.processes import Cli

from backfill.store.schema import task_instances, ti_transitions

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 4
CONF = {"key": "value", "nested": {"n": 1, "list": [1, "two"]}}


def test_multi_date_runs_in_dependency_order_with_conf_everywhere(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    dag = stack.dag("parity_order")
    done = cli(
        "run", "parity_order", "-s", "2016-01-01", "-e", "2016-01-03", "--conf", json.dumps(CONF)
    )
    assert done.code == 0, done.log
    dates = [day("2016-01-01"), day("2016-01-02"), day("2016-01-03")]

    tis = observe.tis(db, "parity_order")
    assert set(tis) == {(t, d) for t in dag.tasks for d in dates}
    bad = {
        k: (t.state, t.try_number)
        for k, t in tis.items()
        if (t.state, t.try_number) != ("success", 1)
    }
    assert not bad, f"TIs not ending success on try 1: {bad}"
    runs = observe.runs(db, "parity_order")
    assert [(r.logical_date, r.state) for r in runs] == [(d, "success") for d in dates]

    # Each TI's callable started exactly once, after its upstreams ended.
    started = observe.started(stack.ledger, "parity_order")
    assert sorted(started) == sorted(("parity_order", t, d, 1) for t in dag.tasks for d in dates)
    observe.assert_dependency_order(stack.ledger, dag)
    # Concurrent: independent TIs (the leaves, and the same task on other dates) overlapped.
    assert observe.max_overlap(observe.spans(stack.ledger, ["parity_order"]).values()) >= 2

    # --conf reached every try (ctx.conf) and is stored on every run and the backfill.
    run_ids = {r.logical_date: r.run_id for r in runs}
    for entry in observe.entries(stack.ledger, "parity_order"):
        assert entry.extra["conf"] == CONF, entry
        assert entry.extra["run_id"] == run_ids[entry.logical_date], entry
    assert [r.conf for r in runs] == [CONF] * 3
    assert [b.conf for b in observe.backfill_rows(db, "parity_order")] == [CONF]


def test_intermittently_failing_task_succeeds_within_its_retries(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_flaky", "-s", "2016-01-01", "-e", "2016-01-02")
    assert done.code == 0, done.log
    dates = [day("2016-01-01"), day("2016-01-02")]

    tis = observe.tis(db, "parity_flaky")
    for d in dates:
        assert (tis["flaky", d].state, tis["flaky", d].try_number) == ("success", 2)
        assert (tis["after", d].state, tis["after", d].try_number) == ("success", 1)
    assert [r.state for r in observe.runs(db, "parity_flaky")] == ["success", "success"]

    starts = observe.entries(stack.ledger, "parity_flaky")
    flaky = sorted(e.key for e in starts if e.task_id == "flaky")
    assert flaky == sorted(("parity_flaky", "flaky", d, n) for d in dates for n in (1, 2))
    at = {e.key: e.at for e in starts}
    for d in dates:
        # The retry waited its retry_delay (0.5 s) after the failed try.
        assert at["parity_flaky", "flaky", d, 2] - at["parity_flaky", "flaky", d, 1] >= 0.45
    observe.assert_dependency_order(stack.ledger, stack.dag("parity_flaky"))

    # The journal shows the retry as Airflow's states: failed try -> up_for_retry -> queued.
    with db.connect() as conn:
        moves = conn.execute(
            sa.select(ti_transitions.c.from_state, ti_transitions.c.to_state)
            .where(ti_transitions.c.task_instance_id.in_(_ti_ids(db, "parity_flaky", "flaky")))
            .order_by(ti_transitions.c.id)
        ).all()
    assert moves.count(("running", "up_for_retry")) == 2
    assert moves.count(("up_for_retry", "queued")) == 2


def test_always_failing_task_ends_the_backfill_with_exit_1_and_a_report_naming_it(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_doomed", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 1, done.log
    assert "failed" in done.stdout
    assert "parity_doomed" in done.stdout
    assert "doomed" in done.stdout.replace("parity_doomed", "")
    assert "RuntimeError: doomed fails every try (this was try 2)" in done.stdout

    date = day("2016-01-01")
    tis = observe.tis(db, "parity_doomed")
    assert (tis["doomed", date].state, tis["doomed", date].try_number) == ("failed", 2)
    assert tis["bystander", date].state == "success"
    assert [r.state for r in observe.runs(db, "parity_doomed")] == ["failed"]
    assert [b.state for b in observe.backfill_rows(db, "parity_doomed")] == ["failed"]
    doomed = sorted(k for k in observe.started(stack.ledger, "parity_doomed") if k[1] == "doomed")
    assert doomed == [("parity_doomed", "doomed", date, 1), ("parity_doomed", "doomed", date, 2)]


def test_disable_retry_gives_a_failing_task_a_single_try(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_doomed", "-s", "2016-01-05", "-e", "2016-01-05", "--disable-retry")
    assert done.code == 1, done.log
    date = day("2016-01-05")
    ti = observe.tis(db, "parity_doomed")["doomed", date]
    assert (ti.state, ti.try_number) == ("failed", 1)
    doomed = [
        k for k in observe.started(stack.ledger, "parity_doomed") if k[1:3] == ("doomed", date)
    ]
    assert doomed == [("parity_doomed", "doomed", date, 1)]
    assert "RuntimeError: doomed fails every try (this was try 1)" in done.stdout


def _ti_ids(db: Engine, dag_id: str, task_id: str) -> list[int]:
    ti = task_instances
    with db.connect() as conn:
        stmt = sa.select(ti.c.id).where(ti.c.dag_id == dag_id, ti.c.task_id == task_id)
        return [int(i) for i in conn.execute(stmt).scalars()]
