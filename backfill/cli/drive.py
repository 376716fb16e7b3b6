"""Driving one backfill in the foreground (`backfill run`; `backfill resume ID`: `resume.py`).

Invariants:
- the first Ctrl-C (or SIGTERM) only sets a stop event: the coordinator ends
  its pass and returns, the local workers stop warmly (a running try
  finishes and records its outcome), and the command exits 130 saying how to
  resume; nothing is rolled back or failed. A second Ctrl-C aborts at once;
- local workers live exactly as long as the drive (`LocalWorkers`); one that
  exits meanwhile is reported, and when none is left the drive stops rather
  than wait forever (exit 1, the backfill is resumable);
- exit codes (DESIGN 4): 0 every run succeeded; 1 the backfill ended failed
  or cancelled (the report names the TIs, grouped by reason), or its local
  workers could not run; 130 interrupted, the backfill is resumable;
- `--output json` prints the final JSON and nothing else on stdout; notices
  (workers, lease waits, outages, how to resume) always go to stderr;
- a database or broker outage never ends the drive: the coordinator retries
  until it is back, saying so once in the display (`Coordinator`). Stopped
  (Ctrl-C) while the database is still unreachable, the command exits 130
  without a report: the backfill is resumable.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from backfill.cli.output import (
    EXIT_INTERRUPTED,
    OutputFormat,
    console,
    emit_json,
)
from backfill.cli.progress import Display, make_display
from backfill.cli.report import print_report
from backfill.client.errors import LocalWorkersError
from backfill.client.local_workers import LocalWorkers, dag_queues
from backfill.client.story import outcome_json
from backfill.config import Settings, redact
from backfill.engine.coordinator import Coordinator, Outcome, Progress
from backfill.engine.metrics import NO_METRICS, Metrics
from backfill.errors import Unreachable
from backfill.model.dag import DAG
from backfill.model.states import BACKFILL_FINISHED, BackfillState

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])

EMBEDDED_LOCAL_WORKERS = 2


def local_workers_option(fn: F) -> F:
    return click.option(
        "--local-workers",
        type=click.IntRange(min=0),
        metavar="N",
        help=(
            "Celery worker processes to start here for the span of the command "
            f"(default: {EMBEDDED_LOCAL_WORKERS} on the embedded broker, else 0)."
        ),
    )(fn)


@contextmanager
def interrupts(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `stop`; a second Ctrl-C raises KeyboardInterrupt."""

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        click.echo("stopping: waiting for the coordinator and local workers...", err=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def drive_foreground(
    settings: Settings,
    engine: Engine,
    dag: DAG,
    backfill_id: int,
    *,
    local_workers: int | None,
    output: OutputFormat,
    take_over: Callable[[Coordinator, threading.Event], None] | None = None,
    metrics: Metrics = NO_METRICS,
) -> int:
    """Drive backfill `backfill_id` to its end here; the command's exit code. `take_over`
    runs first, interruptible like the drive (`resume`: wait for the lease)."""
    if local_workers is None:
        local_workers = EMBEDDED_LOCAL_WORKERS if settings.embedded_broker else 0
    out = console()
    notices = _Notices()
    coordinator = Coordinator(engine, settings, dag, on_notice=notices, metrics=metrics)
    stop = threading.Event()
    try:
        with interrupts(stop):
            if take_over is not None:
                take_over(coordinator, stop)
            # A backfill whose every date is skipped ended at creation: no workers.
            ended = coordinator.progress(backfill_id).state in BACKFILL_FINISHED
            outcome = None
            if not stop.is_set() and not ended:
                _announce(settings, dag, local_workers)
                with LocalWorkers(settings, local_workers, queues=dag_queues(dag)) as workers:
                    title = f"backfill {backfill_id} of {dag.dag_id}"
                    watch = _WorkerWatch(workers, stop)
                    outcome = _drive(
                        coordinator,
                        backfill_id,
                        title=title,
                        out=out,
                        output=output,
                        watch=watch,
                        notices=notices,
                    )
        # Not driven (interrupted first, or ended): the state as it is, no deadlock.
        outcome = outcome or coordinator.outcome(backfill_id)
        final = coordinator.progress(backfill_id)
    except LocalWorkersError as exc:
        click.echo(f"error: {exc}", err=True)
        _say_resumable(backfill_id)
        return 1
    except Unreachable as exc:
        if not stop.is_set():
            raise
        click.echo(f"error: {exc}", err=True)  # stopped mid-outage: no report to read
        _say_resumable(backfill_id)
        return EXIT_INTERRUPTED
    finally:
        coordinator.close()
    return _conclude(backfill_id, dag, outcome, final, out=out, output=output)


def _conclude(
    backfill_id: int,
    dag: DAG,
    outcome: Outcome,
    final: Progress,
    *,
    out: Console,
    output: OutputFormat,
) -> int:
    """Print the final report (or JSON); the exit code."""
    if output is OutputFormat.JSON:
        emit_json(outcome_json(backfill_id, dag.dag_id, outcome, final))
    else:
        print_report(out, backfill_id, dag.dag_id, outcome, final)
    if outcome.state not in BACKFILL_FINISHED:
        _say_resumable(backfill_id)
        return EXIT_INTERRUPTED
    return 0 if outcome.state is BackfillState.SUCCESS else 1


def _say_resumable(backfill_id: int) -> None:
    click.echo(f"backfill {backfill_id} is resumable: backfill resume {backfill_id}", err=True)


def _announce(settings: Settings, dag: DAG, count: int) -> None:
    queues = ",".join(dag_queues(dag))
    if count:
        logs = settings.home / "logs"
        click.echo(
            f"starting {count} local worker(s) for queue(s) {queues}; logs in {logs}", err=True
        )
        return
    broker = "the embedded broker" if settings.embedded_broker else redact(settings.broker_url)
    click.echo(
        f"no local workers: task instances go to queue(s) {queues} on {broker}; until a "
        f"worker consumes them this backfill waits (start one: backfill worker -Q {queues})",
        err=True,
    )


def _drive(
    coordinator: Coordinator,
    backfill_id: int,
    *,
    title: str,
    out: Console,
    output: OutputFormat,
    watch: _WorkerWatch,
    notices: _Notices,
) -> Outcome | None:
    if watch.stop.is_set():  # interrupted while the workers started: dispatch nothing more
        return None
    display = make_display(out, quiet=output is OutputFormat.JSON, title=title, warn=_warn)
    notices.display = display

    def on_progress(progress: Progress) -> None:
        display.update(progress.runs, progress.task_instances, progress.waiting)
        watch.check()

    try:
        outcome = coordinator.drive(backfill_id, on_progress=on_progress, stop=watch.stop)
    finally:
        notices.display = None
        display.close()
    watch.raise_if_all_gone()
    return outcome


def _warn(text: str) -> None:
    click.echo(text, err=True)


class _Notices:
    """Where the coordinator's notices go: the display while there is one, else stderr."""

    def __init__(self) -> None:
        self.display: Display | None = None

    def __call__(self, text: str) -> None:
        if self.display is None:
            _warn(text)
        else:
            self.display.notice(text)


class _WorkerWatch:
    """Warns once per local worker that exits mid-drive; stops the drive if none is left.

    Without it a run whose local workers all died would wait forever.
    """

    def __init__(self, workers: LocalWorkers, stop: threading.Event) -> None:
        self.workers = workers
        self.stop = stop
        self._gone: set[str] = set()

    def check(self) -> None:
        for name, code, log in self.workers.exited():
            if name not in self._gone:
                self._gone.add(name)
                click.echo(
                    f"warning: local worker {name} exited ({code}); its log: {log}", err=True
                )
        if self._all_gone():
            self.stop.set()

    def raise_if_all_gone(self) -> None:
        if self._all_gone():
            raise LocalWorkersError(
                f"every local worker has exited; see their logs in {self.workers.log_folder}"
            )

    def _all_gone(self) -> bool:
        return bool(self.workers.count) and len(self._gone) == self.workers.count
