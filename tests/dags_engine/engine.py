"""DAGs of the coordinator tests (tests/integration/test_coordinator.py), run by real workers.

Every task appends a `start` line to the execution ledger (`support.ledger`)
when its callable starts: a try that ran twice shows twice.
"""

from __future__ import annotations

import itertools

import pendulum
from support.ledger import record as note

from backfill import DAG, Context

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def record(ctx: Context) -> None:
    note("start", ctx)


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
