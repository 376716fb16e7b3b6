"""What a row proves, read from the evidence: the store's tables and the execution ledger.

Never from what the product reports about itself:
- tries started twice: ledger keys (dag, task, date, try) with more than one
  `start` line (the ledger has no uniqueness: every callable start appends);
- TIs lost: TIs of the backfill not in the state the row expects them to end in
  (by default `success`) when the backfill ended or its deadline passed;
- redeliveries seen: deliveries refused at the claim (`refused_writes` of kind
  `claim`), plus what the row saw itself (e.g. refused forgeries in worker logs);
- stale writes refused: `refused_writes` of kind `heartbeat` or `finish`: a
  worker that lost its claim and still tried to beat or to write its outcome;
- and, as the test suite checks after every test, every journaled transition
  is one its state table lists (`backfill.store.journal.illegal_transitions`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from integration.checks import TIView, task_instances_of
from sqlalchemy.engine import Engine

from backfill.store.journal import illegal_transitions
from backfill.store.schema import RefusalKind, dag_runs, refused_writes, task_instances

from .scene import Scene


def succeeded(ti: TIView) -> bool:
    return ti.state == "success"


@dataclass
class Trial:
    """What a row hands back: its scene and backfill, when (if) the backfill ended, and
    the fault's own evidence, each piece named and seen or not."""

    scene: Scene
    backfill_id: int
    seconds: float | None  # launch to final state; None: the deadline passed first
    checks: dict[str, bool] = field(default_factory=dict)
    expect: Callable[[TIView], bool] = succeeded  # the final state of every TI
    redelivered: int = 0  # second deliveries the row saw beyond refused claims
    note: str = ""


@dataclass(frozen=True)
class Tally:
    tis: int
    redeliveries: int
    twice: int
    lost: int
    stale: int
    seconds: float | None
    refused: dict[str, int]  # refused_writes by kind
    illegal: list[str]  # journaled transitions their table does not list


def refusals(engine: Engine, backfill_id: int) -> Counter[str]:
    """The fence's refusals of writes to the backfill's TIs, by kind."""
    ti, run, refused = task_instances, dag_runs, refused_writes
    stmt = (
        sa.select(refused.c.kind, sa.func.count())
        .join(ti, ti.c.id == refused.c.task_instance_id)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id)
        .group_by(refused.c.kind)
    )
    with engine.connect() as conn:
        return Counter({str(kind): int(n) for kind, n in conn.execute(stmt)})


def started_twice(trial: Trial, tis: list[TIView]) -> int:
    """Tries of the backfill's DAGs whose callable started more than once."""
    dag_ids = {ti.dag_id for ti in tis}
    starts = trial.scene.stack.ledger.starts()
    return sum(1 for key, n in starts.items() if key[0] in dag_ids and n > 1)


def tally(trial: Trial) -> Tally:
    engine = trial.scene.engine
    tis = task_instances_of(engine, trial.backfill_id)
    refused = refusals(engine, trial.backfill_id)
    return Tally(
        tis=len(tis),
        redeliveries=refused[RefusalKind.CLAIM.value] + trial.redelivered,
        twice=started_twice(trial, tis),
        lost=sum(1 for ti in tis if not trial.expect(ti)),
        stale=refused[RefusalKind.HEARTBEAT.value] + refused[RefusalKind.FINISH.value],
        seconds=trial.seconds,
        refused=dict(refused),
        illegal=_illegal(engine),
    )


def _illegal(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [str(found) for found in illegal_transitions(conn)]


def broken(result: Tally, checks: dict[str, bool]) -> list[str]:
    """The promises the row broke and the evidence it did not see; empty: the row holds."""
    problems = []
    if result.twice:
        problems.append(f"{result.twice} tries started twice")
    if result.lost:
        problems.append(f"{result.lost} TIs lost")
    if result.seconds is None:
        problems.append("no final state by the deadline")
    if result.illegal:
        problems.append(f"transitions missing from their tables: {result.illegal}")
    problems += [f"not seen: {what}" for what, seen in checks.items() if not seen]
    return problems
