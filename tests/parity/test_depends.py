"""depends_on_past and the order of dates, end to end through `backfill run`.

Ported from apache/airflow tests/jobs/test_backfill_job.py (2.x):
- test_backfill_depends_on_past: a date whose past never ran deadlocks, and
  the report says so and points to `--ignore-first-depends-on-past`, which
  cures it (DESIGN: a gap blocks; Airflow 2.10's CLI forced the flag on);
- test_backfill_depends_on_past_backwards: forwards is fine, backwards is
  refused with Airflow's message (here exit 2, nothing written);
- dates of a depends_on_past task run one after the other (the ledger shows
  each try starting after the previous date's ended);
- `--run-backwards` without depends_on_past runs the newest date first.
"""

from __future__ import annotations

import itertools

from sqlalchemy.engine import Engine
from support.processes import Cli

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 2


def _assert_one_date_at_a_time(stack: ParityStack, dag_id: str, dates: list[str]) -> None:
    spans = observe.spans(stack.ledger, [dag_id])
    ordered = [spans[k] for d in dates for k in spans if k[2] == day(d)]
    assert len(ordered) == len(dates), f"expected one finished try per date: {spans}"
    for (_, earlier_end), (later_start, _) in itertools.pairwise(ordered):
        assert later_start >= earlier_end, (
            f"a date started before the previous one ended: {ordered}"
        )


def test_depends_on_past_deadlock_is_reported_and_cured_by_ignore_first(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    # 2016-01-06's past (2016-01-05) never ran: the TI can never run.
    done = cli("run", "parity_dop", "-s", "2016-01-06", "-e", "2016-01-06")
    assert done.code == 1, done.log
    report = done.stdout
    assert "deadlock" in report
    assert "depends_on_past" in report
    assert "--ignore-first-depends-on-past" in report
    assert "parity_dop/dop/2016-01-06" in report
    assert observe.started(stack.ledger, "parity_dop") == []
    assert observe.states(db, "parity_dop")["dop", day("2016-01-06")] != "success"
    assert [b.state for b in observe.backfill_rows(db, "parity_dop")] == ["failed"]

    # The cure: the first date of the range ignores its past.
    done = cli(
        "run", "parity_dop", "-s", "2016-01-06", "-e", "2016-01-06",
        "--reprocess", "failed", "--ignore-first-depends-on-past",
    )  # fmt: skip
    assert done.code == 0, done.log
    assert observe.states(db, "parity_dop")["dop", day("2016-01-06")] == "success"
    assert observe.started(stack.ledger, "parity_dop") == [
        ("parity_dop", "dop", day("2016-01-06"), 1)
    ]


def test_depends_on_past_runs_dates_one_after_the_other(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    # The DAG's first date has no past: no flag needed.
    first = ["2016-01-01", "2016-01-02", "2016-01-03"]
    done = cli("run", "parity_dop", "-s", first[0], "-e", first[-1])
    assert done.code == 0, done.log
    _assert_one_date_at_a_time(stack, "parity_dop", first)

    # A later backfill finds its past succeeded (by the backfill above).
    done = cli("run", "parity_dop", "-s", "2016-01-04", "-e", "2016-01-04")
    assert done.code == 0, done.log

    # A range whose first date has no past runs with the flag, still in order.
    later = ["2016-02-01", "2016-02-02", "2016-02-03"]
    done = cli(
        "run", "parity_dop", "-s", later[0], "-e", later[-1], "--ignore-first-depends-on-past"
    )
    assert done.code == 0, done.log
    _assert_one_date_at_a_time(stack, "parity_dop", later)
    found = observe.states(db, "parity_dop")
    for ds in [*first, "2016-01-04", *later]:
        assert found["dop", day(ds)] == "success", ds


def test_backwards_with_depends_on_past_is_refused(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_dop", "-s", "2016-03-01", "-e", "2016-03-02", "--run-backwards")
    assert done.code == 2, done.log
    assert (
        "You cannot backfill backwards because one or more tasks depend_on_past: dop" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not [r for r in observe.runs(db, "parity_dop") if r.logical_date.month == 3]


def test_run_backwards_runs_the_newest_date_first(stack: ParityStack, db: Engine, cli: Cli) -> None:
    dates = ["2016-01-01", "2016-01-02", "2016-01-03"]
    done = cli("run", "parity_backwards", "-s", dates[0], "-e", dates[-1], "--run-backwards")
    assert done.code == 0, done.log
    started = [k[2] for k in observe.started(stack.ledger, "parity_backwards")]
    assert started == [day(d) for d in reversed(dates)]
    _assert_one_date_at_a_time(stack, "parity_backwards", list(reversed(dates)))
    runs = sorted(observe.runs(db, "parity_backwards"), key=lambda r: r.start_date)
    assert [r.logical_date for r in runs] == [day(d) for d in reversed(dates)]
