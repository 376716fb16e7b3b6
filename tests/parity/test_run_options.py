"""The other `backfill run` options of BackfillJob, end to end.

From AIRFLOW_SEMANTICS.md section 8 and the issue's option list, each checked
on what really ran (the ledger) and the states written:
- without `--continue-on-failures`, once a TI failed no new run starts: the
  later dates never run, the backfill exits 1; with it every date runs
  (DESIGN: still exit 1, since a TI failed);
- `--mark-success`: every TI ends success and no callable runs;
- `--task-regex`: only the matching tasks run, their upstreams are not required;
- `--ignore-dependencies`: a downstream runs although its upstream failed.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from support.processes import Cli

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 2


def _ran(stack: ParityStack, dag_id: str, month: int) -> list[tuple[str, str]]:
    """(task_id, ds) of every callable start of `dag_id` in `month` of 2016, in order."""
    return [
        (key[1], f"{key[2]:%Y-%m-%d}")
        for key in observe.started(stack.ledger, dag_id)
        if key[2].month == month
    ]


def test_a_failure_stops_new_runs_without_continue_on_failures(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    # One run at a time; `a` fails on 2016-01-01, the first run.
    done = cli("run", "parity_stop", "-s", "2016-01-01", "-e", "2016-01-03")
    assert done.code == 1, done.log
    assert _ran(stack, "parity_stop", 1) == [("a", "2016-01-01")]
    runs = {r.logical_date: r.state for r in observe.runs(db, "parity_stop")}
    assert runs[day("2016-01-01")] == "failed"
    found = observe.states(db, "parity_stop")
    for ds in ("2016-01-02", "2016-01-03"):
        assert found["a", day(ds)] != "success", f"the run of {ds} started after a failure"
    assert [b.state for b in observe.backfill_rows(db, "parity_stop")] == ["failed"]


def test_continue_on_failures_runs_every_date(stack: ParityStack, db: Engine, cli: Cli) -> None:
    done = cli(
        "run", "parity_stop", "-s", "2016-02-01", "-e", "2016-02-03", "--continue-on-failures"
    )
    assert done.code == 1, done.log  # a TI failed (DESIGN's exit codes)
    assert sorted(_ran(stack, "parity_stop", 2)) == [
        ("a", "2016-02-01"),
        ("a", "2016-02-02"),
        ("a", "2016-02-03"),
        ("b", "2016-02-02"),
        ("b", "2016-02-03"),
    ]
    runs = {r.logical_date: r.state for r in observe.runs(db, "parity_stop")}
    assert [runs[day(f"2016-02-0{n}")] for n in (1, 2, 3)] == ["failed", "success", "success"]


def test_mark_success_runs_no_callable(stack: ParityStack, db: Engine, cli: Cli) -> None:
    done = cli("run", "parity_order", "-s", "2016-05-01", "-e", "2016-05-02", "--mark-success")
    assert done.code == 0, done.log
    may = {k: s for k, s in observe.states(db, "parity_order").items() if k[1].month == 5}
    assert len(may) == 2 * 5
    assert set(may.values()) == {"success"}
    assert _ran(stack, "parity_order", 5) == []


def test_task_regex_runs_only_the_matching_tasks(stack: ParityStack, db: Engine, cli: Cli) -> None:
    done = cli(
        "run", "parity_order", "-s", "2016-06-01", "-e", "2016-06-01",
        "--task-regex", "^upstream_level_2$",
    )  # fmt: skip
    assert done.code == 0, done.log
    # Its upstreams (leave1, leave2, upstream_level_1) are outside the selection: not required.
    assert _ran(stack, "parity_order", 6) == [("upstream_level_2", "2016-06-01")]
    found = observe.states(db, "parity_order")
    assert found["upstream_level_2", day("2016-06-01")] == "success"


def test_ignore_dependencies_runs_a_task_whose_upstream_failed(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    stack.switch_on("parity_rerun.a.2016-08-01")  # `a` fails; `b` is downstream of it
    try:
        done = cli(
            "run", "parity_rerun", "-s", "2016-08-01", "-e", "2016-08-01", "--ignore-dependencies"
        )
    finally:
        stack.switch_off("parity_rerun.a.2016-08-01")
    assert done.code == 1, done.log  # `a` failed
    found = observe.states(db, "parity_rerun")
    date = day("2016-08-01")
    assert (found["a", date], found["b", date], found["c", date]) == (
        "failed",
        "success",
        "success",
    )
    assert sorted(_ran(stack, "parity_rerun", 8)) == [
        ("a", "2016-08-01"),
        ("b", "2016-08-01"),
        ("c", "2016-08-01"),
    ]
