"""Two backfills sharing one pool, driven by two coordinators at once, on PostgreSQL.

Added to Airflow's tests (the issue's "limits held globally"): two DAGs whose
every task is in the 2-slot pool `parity_shared` are backfilled by two
`backfill run` processes started together, each its own coordinator. The
pool is counted and locked inside each coordinator's queueing transaction,
so together they never run more than 2 tries in it (the TI rows' start/end),
and the pool was full at some instant (the ledger). The first two tries hold the
pool until both coordinators drive, so the backfills really compete (the
test checks that their tries interleaved; otherwise it would prove nothing).
"""

from __future__ import annotations

from integration.checks import set_pool
from sqlalchemy.engine import Engine
from support.ledger import Key
from support.processes import Cli
from support.waiting import wait_until

from . import observe
from .conftest import ParityStack

WORKERS = 4
EIGHT_DAYS = ("-s", "2016-01-01", "-e", "2016-01-08")
DAGS = ("parity_share_a", "parity_share_b")


def test_two_backfills_sharing_a_pool_never_exceed_it(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    set_pool(db, "parity_shared", 2)
    # Two coordinators (two `backfill run` processes) drive two DAGs at once.
    first, second = (cli.start("run", dag_id, *EIGHT_DAYS) for dag_id in DAGS)
    # The first two tries hold the pool until both coordinators are driving:
    # from then on they compete for every slot that frees up.
    wait_until(
        lambda: _driving(db) and len(_started(stack)) == 2,
        timeout=60,
        what="both backfills to be driven and the pool to be full",
    )
    stack.switch_on("parity_shared.go")
    for running in (first, second):
        done = running.finish(cli.timeout)
        assert done.code == 0, done.log
    for dag_id in DAGS:
        observe.assert_all_ran_once(stack.ledger, db, dag_id, 8)

    a, b = (observe.spans(stack.ledger, [dag_id]).values() for dag_id in DAGS)
    # The two backfills really competed: their tries interleaved in time.
    assert min(s for s, _ in b) < max(e for _, e in a)
    assert min(s for s, _ in a) < max(e for _, e in b)
    ledger_peak, rows_peak = observe.peaks(stack.ledger, db, *DAGS)
    assert ledger_peak == 2, "the shared 2-slot pool was never full"
    assert rows_peak <= 2, "two backfills together ran more than 2 tries in the 2-slot pool"


def _started(stack: ParityStack) -> list[Key]:
    """The tries of either DAG that started (whichever coordinator got the pool first)."""
    return [key for dag_id in DAGS for key in observe.started(stack.ledger, dag_id)]


def _driving(db: Engine) -> bool:
    """Whether both backfills exist and are running, with a run started."""
    return all(
        [b.state for b in observe.backfill_rows(db, dag_id)] == ["running"]
        and any(r.state == "running" for r in observe.runs(db, dag_id))
        for dag_id in DAGS
    )
