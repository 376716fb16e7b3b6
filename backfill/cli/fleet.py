"""`backfill coordinator` and `backfill worker`: the long-running processes of a fleet.

Invariants:
- `backfill coordinator` runs the daemon of `backfill.engine.daemon`: every
  backfill that needs a driver, one thread each, HA through leases;
- `--once` drives the backfills that need it now to their end, then exits
  (1 if a backfill's thread failed);
- Ctrl-C (or SIGTERM) stops every thread after its current pass; everything
  stays as it is, resumable by any coordinator. Exit 130 on Ctrl-C, 0 on
  SIGTERM (a supervisor asking for a clean stop);
- `backfill worker` replaces its own process with `celery -A workers worker`
  and the options given, so signals reach Celery exactly as they would.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from backfill.cli.metrics_flags import MetricsAddress, metrics_options, serving_metrics
from backfill.cli.output import EXIT_INTERRUPTED
from backfill.config import Settings
from backfill.engine.daemon import Drivers, serve
from backfill.engine.metrics import Metrics
from backfill.store import db


@contextmanager
def _stopping(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT and SIGTERM set `stop`; yields the signals received."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("coordinator")
@click.option(
    "--once",
    is_flag=True,
    help="Drive the backfills that need a driver now to their end, then exit.",
)
@metrics_options
def coordinator_command(once: bool, metrics_address: MetricsAddress | None) -> int:
    """Drive every created or orphaned backfill (run several for high availability)."""
    settings = Settings.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its schema check's chatter
    # The port is bound before the database is opened (and perhaps created): exit 2 if taken.
    with serving_metrics(metrics_address) as metrics:
        return _serve(settings, once=once, metrics=metrics)


def _serve(settings: Settings, *, once: bool, metrics: Metrics) -> int:
    # No pre-ping: the scan and every coordinator transaction are retried on a
    # fresh connection, which replaces one the server dropped.
    engine = db.open_engine(settings, create=True, pre_ping=False)
    assert engine is not None  # create=True always gives an engine
    metrics.watch(engine)
    stop = threading.Event()
    try:
        with _stopping(stop) as received:
            drivers = Drivers(engine, settings, stop, metrics=metrics)
            serve(drivers, stop, once=once)
            drivers.join()
    finally:
        engine.dispose()
    if signal.SIGINT in received:
        return EXIT_INTERRUPTED
    return 1 if once and drivers.failed else 0


@click.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(celery_args: tuple[str, ...]) -> None:
    """A Celery worker for this app: `celery -A workers worker [CELERY_ARGS]` (try --help)."""
    Settings.from_env()  # a bad variable is one line and exit 2 here, not a Celery traceback
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", *celery_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)
