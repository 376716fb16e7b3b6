"""The database engine and DAG bag of each worker process, made on first use in it.

Invariants:
- engines are created in the process that uses them: a pool inherited
  through fork would share its connections with the parent, so a process
  that finds its parent's forgets it (without closing what the parent uses);
- the engine is in autocommit, without pre-ping (see `workers.tasks`);
- DAG files are imported, and their fingerprints computed, once per process.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backfill.config import Settings, redact
from backfill.errors import ConfigError
from backfill.model.discovery import DagBag, load_dags, summary
from backfill.store.db import describe, open_engine
from backfill.store.reconnect import Outage, Reconnect

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Process:
    pid: int
    engine: Engine  # in autocommit (see the module invariants)
    db: Reconnect  # claim and finish: retried for up to WORKER_BUDGET seconds
    beats: Reconnect  # a heartbeat: retried until the next one is due
    dags: DagBag
    # DAG files are imported once per process, so their fingerprints (a hash of
    # every task's options) are computed once too, not for every try.
    fingerprints: dict[str, str]


class PerProcess:
    """The engine and DAG bag of the current process, made on first use in each process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()  # a threads pool may ask from many threads at once
        self._current: Process | None = None

    def get(self) -> Process:
        with self._lock:
            current = self._current
            if current is not None and current.pid == os.getpid():
                return current
            if current is not None:
                # Inherited through fork: forget the parent's pool without closing
                # its connections, which the parent still uses.
                current.engine.dispose(close=False)
            self._current = self._load()
            return self._current

    def _load(self) -> Process:
        settings = self._settings
        # No pre-ping: claim, finish and heartbeat are retried on a fresh connection
        # after a disconnect, which replaces a connection the server dropped.
        engine = Reconnect().run(
            lambda: open_engine(settings, create=False, autocommit=True, pre_ping=False)
        )
        if engine is None:
            raise ConfigError(
                f"no database at {redact(settings.database_url)}; check "
                "BACKFILL_DATABASE_URL / BACKFILL_HOME or run `backfill db migrate`"
            )
        dags = load_dags(settings.dags_folder)
        for path, error in dags.errors.items():
            log.warning("DAG file %s failed to import: %s", path, summary(error))
        log.info("process %d: %d DAG(s) loaded from %s", os.getpid(), len(dags.dags), dags.folder)
        fingerprints = {dag_id: dag.fingerprint for dag_id, dag in dags.dags.items()}
        outage = Outage("database", log.warning)  # one per process: its threads share it
        target = describe(engine)
        return Process(
            pid=os.getpid(),
            engine=engine,
            db=Reconnect(target=target, outage=outage),
            beats=Reconnect(target=target, outage=outage, budget=settings.heartbeat_interval),
            dags=dags,
            fingerprints=fingerprints,
        )
