"""Moves the rows share: drive a backfill, find a worker mid-try, read the journal."""

from __future__ import annotations

import sqlalchemy as sa
from integration.checks import TIView, task_instances_of
from sqlalchemy.engine import Engine
from support.processes import CliProcess, Worker

from backfill.store.schema import (
    backfills,
    dag_runs,
    refused_writes,
    task_instances,
    ti_transitions,
)

from .scene import Scene


def daemon(scene: Scene) -> CliProcess:
    """A `backfill coordinator` daemon process on the scene (it drives every backfill)."""
    return scene.coordinators.cli(scene.stack, "coordinator")


def launch(scene: Scene, dag_id: str, *, workers: int = 3, concurrency: int = 3) -> int:
    """Workers, a backfill of `dag_id` and a coordinator daemon driving it: its id."""
    scene.start_workers(workers, concurrency=concurrency)
    backfill_id = scene.create(dag_id)
    scene.launch()
    daemon(scene)
    return backfill_id


def moves(engine: Engine, backfill_id: int, from_state: str, to_state: str) -> list[str]:
    """The actors of every journaled move `from_state -> to_state` of the backfill's TIs."""
    journal, ti, run = ti_transitions, task_instances, dag_runs
    stmt = (
        sa.select(journal.c.actor)
        .join(ti, ti.c.id == journal.c.task_instance_id)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(
            run.c.backfill_id == backfill_id,
            journal.c.from_state == from_state,
            journal.c.to_state == to_state,
        )
        .order_by(journal.c.id)
    )
    with engine.connect() as conn:
        return [str(actor) for actor in conn.execute(stmt).scalars()]


def reaped(engine: Engine, backfill_id: int) -> int:
    """Tries a coordinator took back from `running` (a silent worker's, reaped)."""
    return sum(
        1
        for to_state in ("up_for_retry", "failed")
        for actor in moves(engine, backfill_id, "running", to_state)
        if actor.startswith("coordinator:")
    )


def running_pids(engine: Engine, backfill_id: int) -> list[int]:
    """The processes (from each claimant, `host:pid`) of the backfill's running tries."""
    ti, run = task_instances, dag_runs
    stmt = (
        sa.select(ti.c.claimant)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id, ti.c.state == "running")
    )
    with engine.connect() as conn:
        claimants = [c for c in conn.execute(stmt).scalars() if c]
    return [int(str(c).rsplit(":", 1)[1]) for c in claimants]


def busy_worker(scene: Scene, backfill_id: int, among: list[Worker]) -> Worker | None:
    """A live worker of `among` that runs a try of the backfill right now, if any."""
    for pid in running_pids(scene.engine, backfill_id):
        for worker in among:
            if worker.process.poll() is None and worker.owns(pid):
                return worker
    return None


def ran_on(scene: Scene, worker: Worker) -> int:
    """Callable starts (ledger) in processes of `worker`."""
    return sum(1 for e in scene.stack.ledger.entries("start") if worker.owns(e.pid))


def tis(scene: Scene, backfill_id: int) -> list[TIView]:
    return task_instances_of(scene.engine, backfill_id)


def lease_owner(scene: Scene, backfill_id: int) -> str | None:
    """Who holds the backfill's lease (`host:pid:nonce`), if anyone."""
    with scene.engine.connect() as conn:
        stmt = sa.select(backfills.c.lease_owner).where(backfills.c.id == backfill_id)
        owner = conn.execute(stmt).scalar_one()
    return None if owner is None else str(owner)


def stale_writes_of(scene: Scene, backfill_id: int, pids: set[int]) -> int:
    """Heartbeats and outcomes of processes `pids` that the fence refused (`refused_writes`)."""
    refused, ti, run = refused_writes, task_instances, dag_runs
    stmt = (
        sa.select(refused.c.claimant)
        .join(ti, ti.c.id == refused.c.task_instance_id)
        .join(run, run.c.id == ti.c.dag_run_id)
        .where(run.c.backfill_id == backfill_id, refused.c.kind.in_(["heartbeat", "finish"]))
    )
    with scene.engine.connect() as conn:
        claimants = list(conn.execute(stmt).scalars())
    return sum(1 for c in claimants if int(str(c).rsplit(":", 1)[1]) in pids)
