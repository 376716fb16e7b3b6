"""Airflow's `ds`-style macros and `params` as a real worker's task sees them.

`backfill run --conf` on each backend, one `celery worker`: the conf goes from
the command line through the database to the worker's claim, and the task of
`macros_check` (tests/dags_integration/macros.py) records its Context in the
ledger. The dates straddle Amsterdam's change to summer time, where the DAG's
wall clock and UTC disagree about the day (the definitions are in
backfill/model/macros.py; the unit tests in tests/unit/test_macros.py).
"""

from __future__ import annotations

import json

from support.processes import Coordinators, WorkerPool
from support.stack import Stack

CONF = {"limit": 99, "options": {"dry": False}, "extra": "from --conf"}


def test_a_task_sees_the_macros_in_the_dags_timezone_and_params_under_the_conf(
    stack: Stack, workers: WorkerPool, coordinators: Coordinators
) -> None:
    workers.start(stack, 1)
    args = ["run", "macros_check", "-s", "2024-03-30", "-e", "2024-04-01"]
    finished = coordinators.cli(stack, *args, "--conf", json.dumps(CONF)).finish(timeout=90)
    assert finished.code == 0, finished.output

    seen = {e.ds: e.extra for e in stack.ledger.entries("macros")}
    assert sorted(seen) == ["2024-03-30", "2024-03-31", "2024-04-01"]  # the DAG's wall clock
    dates = {ds: (e["prev_ds"], e["ds_nodash"], e["next_ds"]) for ds, e in seen.items()}
    assert dates == {
        "2024-03-30": ("2024-03-29", "20240330", "2024-03-31"),  # before start_date, as Airflow
        "2024-03-31": ("2024-03-30", "20240331", "2024-04-01"),
        "2024-04-01": ("2024-03-31", "20240401", "2024-04-02"),
    }
    change = seen["2024-03-31"]
    assert (change["prev_ds_nodash"], change["next_ds_nodash"]) == ("20240330", "20240401")
    assert (change["ts"], change["ts_nodash"]) == ("2024-03-31T00:00:00+01:00", "20240331T000000")
    assert (change["data_interval_start"], change["data_interval_end"]) == (
        "2024-03-31T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",
    )
    expected_params = {
        "table": "events",  # the DAG's
        "limit": 99,  # the conf's, over the DAG's
        "options": {"dry": False},  # replaced whole, not merged
        "extra": "from --conf",  # a key only the conf has
    }
    assert all(e["params"] == expected_params for e in seen.values()), seen
    assert all(e["conf"] == CONF for e in seen.values()), seen
