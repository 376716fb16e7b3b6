"""DAG of tests/parity/test_rerun.py: what runs again under each rerun policy.

- `parity_rerun`: a >> b, and c beside them. `a` fails on a date while the
  test's switch `parity_rerun.a.<ds>` is on (see `_parity.py`);
- `parity_inflight`: one task that holds until the switch `parity_inflight.go`
  is on, so a test can keep a backfill's runs in flight.

Every task records its tries in the ledger.
"""

from __future__ import annotations

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context


def switchable(ctx: Context) -> None:
    parity.record("start", ctx)
    if parity.switched(f"parity_rerun.a.{ctx.ds}"):
        raise RuntimeError(f"a fails on {ctx.ds} while its switch is on")
    parity.record("end", ctx)


def quick(ctx: Context) -> None:
    parity.timed(ctx, 0.01)


parity_rerun = DAG(
    "parity_rerun", schedule="@daily", start_date=pendulum.datetime(2016, 1, 1, tz="UTC")
)
parity_rerun.add_task("a", switchable) >> parity_rerun.add_task("b", quick)
parity_rerun.add_task("c", quick)


def held(ctx: Context) -> None:
    parity.record("start", ctx)
    parity.wait_for_switch("parity_inflight.go")
    parity.record("end", ctx)


parity_inflight = DAG(
    "parity_inflight", schedule="@daily", start_date=pendulum.datetime(2016, 1, 1, tz="UTC")
)
parity_inflight.add_task("op", held)
