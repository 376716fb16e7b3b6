"""DAG of the outage tests (tests/integration/test_outages.py).

`outage_bash`: the shape of `example_bash_operator` (three `runme_*` tasks
feed `run_after_loop`, which feeds `run_this_last`; `also_run_this` beside),
each task a few hundred milliseconds long, so a backfill of 36 daily runs
(216 TIs) keeps two workers busy for about ten seconds. No retries: a try
whose outcome an outage lost (a success reaped as a dead worker) fails its
TI, and the tests see it.

Every callable appends to the test's execution ledger (see `_support.py`).
"""

from __future__ import annotations

import _support as support  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context


def work(ctx: Context) -> None:
    support.timed(ctx, 0.2, 0.6)


outage_bash = DAG(
    "outage_bash",
    schedule="@daily",
    start_date=pendulum.datetime(2016, 1, 1, tz="UTC"),
    max_active_runs=16,
    max_active_tasks=16,
    default_args={"retries": 0},
)
_runme = [outage_bash.add_task(f"runme_{i}", work) for i in range(3)]
_after_loop = outage_bash.add_task("run_after_loop", work)
_last = outage_bash.add_task("run_this_last", work)
_runme >> _after_loop >> _last
outage_bash.add_task("also_run_this", work) >> _last
