"""`backfill resume ID`: continue a paused backfill, or one whose driver died, here.

Invariants:
- `resume` un-pauses the backfill and, in the same transaction, takes its
  lease if it is free (`store.control.resume`): no daemon can take it in
  between (a daemon drives no paused backfill), so it drives the backfill
  here at once, as `backfill run` does (`drive.drive_foreground`);
- a lease held by another coordinator it waits for, saying so: a dead
  driver's until it lapses, then it drives; a live driver's (a daemon, a
  `backfill run`, which it knows alive once it sees the lease renewed) until
  the backfill ends, standing by and printing the backfill's counts now and
  then. It then prints the report and exits as that drive ended (0 every
  run succeeded, 1 failed); it never drives beside a live driver;
- Ctrl-C while standing by leaves the backfill to the coordinator driving
  it (exit 130).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click
import pendulum

from backfill.cli.drive import drive_foreground, local_workers_option
from backfill.cli.metrics_flags import MetricsAddress, metrics_options, serving_metrics
from backfill.cli.output import BACKFILL_ID, OutputFormat, output_option
from backfill.cli.progress import format_counts
from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.metrics import Metrics
from backfill.errors import UserError
from backfill.model.discovery import load_dags
from backfill.model.states import BACKFILL_FINISHED
from backfill.store import control, db, reads, status
from backfill.store.errors import BackfillNotFound

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

LEASE_NOTICE_EVERY = 15.0  # seconds between repeats of what `resume` waits for


@click.command("resume")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@local_workers_option
@metrics_options
@output_option
def resume_command(
    backfill_id: int,
    local_workers: int | None,
    metrics_address: MetricsAddress | None,
    output: OutputFormat,
) -> int:
    """Continue backfill ID (paused, or whose driver died) and drive it to the end here."""
    settings = Settings.from_env()
    with serving_metrics(metrics_address) as metrics:  # bound before anything is written
        return _resume(settings, backfill_id, local_workers, output, metrics)


def _resume(
    settings: Settings,
    backfill_id: int,
    local_workers: int | None,
    output: OutputFormat,
    metrics: Metrics,
) -> int:
    # No pre-ping: a driver retries each transaction on a fresh connection.
    engine = db.open_engine(settings, create=False, pre_ping=False)
    if engine is None:
        raise BackfillNotFound(backfill_id)
    try:
        with reads.reading(engine) as conn:
            found = status.summary(conn, backfill_id)
        if found is None:
            raise BackfillNotFound(backfill_id)
        if found.state in BACKFILL_FINISHED:
            raise UserError(
                f"backfill {backfill_id} has already ended ({found.state}); nothing to resume. "
                "To run its dates again: backfill run ... --reprocess failed"
            )
        dag = load_dags(settings.dags_folder).get(found.dag_id)

        def take_over(coordinator: Coordinator, stop: threading.Event) -> None:
            _take_over(settings, engine, coordinator, backfill_id, stop)

        metrics.watch(engine)
        return drive_foreground(
            settings,
            engine,
            dag,
            backfill_id,
            local_workers=local_workers,
            output=output,
            take_over=take_over,
            metrics=metrics,
        )
    finally:
        engine.dispose()


def _take_over(
    settings: Settings,
    engine: Engine,
    coordinator: Coordinator,
    backfill_id: int,
    stop: threading.Event,
) -> None:
    """Un-pause the backfill, taking its lease if free in the same transaction; then wait
    until this coordinator holds the lease, or the backfill has ended (or `stop`)."""
    ttl = timedelta(seconds=settings.heartbeat_timeout)
    with engine.begin() as conn:
        owner, now = coordinator.owner, pendulum.now("UTC")
        resumed = control.resume(conn, backfill_id, owner=owner, now=now, ttl=ttl)
    # Not paused: its driver died, or someone resumed or cancelled it meanwhile.
    if resumed:
        click.echo(f"backfill {backfill_id} un-paused", err=True)
    notice = _LeaseNotice(backfill_id, lambda: coordinator.progress(backfill_id).task_instances)
    coordinator.wait_for_lease(backfill_id, on_wait=notice, stop=stop)


class _LeaseNotice:
    """Says who holds the lease, at once and whenever the holder changes; at once too when
    the holder turns out alive (it renewed the lease), so this command stands by; then
    again every LEASE_NOTICE_EVERY seconds, with the counts while a live holder drives."""

    def __init__(self, backfill_id: int, counts: Callable[[], Mapping[str, int]]) -> None:
        self._backfill_id, self._counts = backfill_id, counts
        self._owner: str | None = None
        self._first_until: datetime | None = None
        self._alive = False
        self._said_at = float("-inf")

    def __call__(self, owner: str, until: datetime) -> None:
        if owner != self._owner:
            self._owner, self._first_until, self._alive = owner, until, False
            self._said_at = float("-inf")
        elif not self._alive and self._first_until is not None and until > self._first_until:
            self._alive, self._said_at = True, float("-inf")
        now = time.monotonic()
        if now - self._said_at < LEASE_NOTICE_EVERY:
            return
        self._said_at = now
        if not self._alive:
            text = f"waiting for coordinator {owner}'s lease to lapse (until {until.isoformat()})"
        else:
            text = (
                f"standing by: coordinator {owner} is driving backfill {self._backfill_id} "
                f"({format_counts(self._counts())}); its report is printed here when it ends, "
                "or this command drives it if that coordinator dies"
            )
        click.echo(text, err=True)
