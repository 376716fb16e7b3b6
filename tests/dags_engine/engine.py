"""DAGs of the coordinator tests (tests/test_coordinator.py), run by real workers.

Every task appends one line `dag_id task_id ds try_number pid` to the ledger
file named by BACKFILL_TEST_LEDGER, when the callable starts, with ONE write
on an O_APPEND descriptor (atomic for such short lines), and no uniqueness
of any kind: a try that ran twice shows twice. Without the variable (e.g.
`backfill dags check` on this folder) nothing is recorded.
"""

from __future__ import annotations

import itertools
import os

import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def record(ctx: Context) -> None:
    path = os.environ.get("BACKFILL_TEST_LEDGER")
    if not path:
        return
    line = f"{ctx.dag_id} {ctx.task_id} {ctx.ds} {ctx.try_number} {os.getpid()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# The shape of Airflow's example_bash_operator.
example = DAG("engine_example", schedule="@daily", start_date=START)
loop = [example.task(task_id=f"runme_{i}")(record) for i in range(3)]
after_loop = example.task(task_id="run_after_loop")(record)
also = example.task(task_id="also_run_this")(record)
last = example.task(task_id="run_this_last")(record)
loop >> after_loop >> last
also >> last

# A linear chain: each hop needs the coordinator to notice the upstream's finish.
chain = DAG("engine_chain", schedule="@daily", start_date=START)
links = [chain.task(task_id=f"link_{i}")(record) for i in range(5)]
for upstream, downstream in itertools.pairwise(links):
    upstream >> downstream

failing = DAG("engine_fail", schedule="@daily", start_date=START, max_active_runs=1)


@failing.task
def boom(ctx: Context) -> None:
    record(ctx)
    raise ValueError(f"boom on {ctx.ds}")


failing_after = failing.task(task_id="after_boom")(record)
failing_side = failing.task(task_id="side")(record)
boom >> failing_after
