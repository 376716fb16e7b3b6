"""DAGs of tests/parity/test_depends.py: depends_on_past and the order of dates.

- `parity_dop`: Airflow's test_depends_on_past DAG: one task `dop` with
  depends_on_past=True (start_date 2016-01-01);
- `parity_backwards`: no depends_on_past, one run at a time, so the order
  the dates ran in is the order the ledger shows.
"""

from __future__ import annotations

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context

START = pendulum.datetime(2016, 1, 1, tz="UTC")


def short(ctx: Context) -> None:
    parity.timed(ctx, 0.1)


parity_dop = DAG("parity_dop", schedule="@daily", start_date=START)
parity_dop.add_task("dop", short, depends_on_past=True)

parity_backwards = DAG("parity_backwards", schedule="@daily", start_date=START, max_active_runs=1)
parity_backwards.add_task("op", short)
