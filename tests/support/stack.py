"""What the processes of one test share: database, broker, DAGs folder, timeouts, ledger.

- `Stack`: database URL, private Redis DB (`support.private_redis`), DAGs
  folder, timeouts, ledger (`support.ledger`) and gates; `env()` for
  subprocesses, `settings()` for in-process coordinators. Its processes are
  started by `support.processes`.
Every wait of these tests is a condition polled against a deadline, never a bare
sleep (`support.waiting.wait_until`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pendulum

from backfill.config import Settings
from backfill.model.dag import DAG
from backfill.model.discovery import load_dags

from .ledger import GATES_ENV, LEDGER_ENV, Key, Ledger, gate_name, importable
from .private_redis import PrivateRedis

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "tests" / "dags_integration"


def utc(day: str) -> pendulum.DateTime:
    parsed = pendulum.parse(day, tz="UTC")
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


# --- the stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Everything the processes of one test share: database, broker, DAGs, timeouts."""

    db_url: str
    redis: PrivateRedis | None  # None: the broker is another (`with_broker`)
    home: Path
    ledger: Ledger
    gates: Path
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 30.0
    queued_timeout: float = 60.0
    broker: str | None = None  # another broker than the private Redis DB (`with_broker`)
    dags: Path = DAGS
    message_key: str | None = None  # BACKFILL_MESSAGE_KEY of every process

    @classmethod
    def create(cls, db_url: str, private: PrivateRedis | None, folder: Path) -> Self:
        home, gates = folder / "home", folder / "gates"
        home.mkdir()
        gates.mkdir()
        return cls(
            db_url=db_url, redis=private, home=home, ledger=Ledger(folder / "ledger"), gates=gates
        )

    @property
    def broker_url(self) -> str:
        if self.broker is not None:
            return self.broker
        assert self.redis is not None, "a Stack without a private Redis DB needs with_broker()"
        return self.redis.url

    def with_timeouts(self, **timeouts: float) -> Self:
        return dataclasses.replace(self, **timeouts)  # type: ignore[arg-type]

    def with_database(self, db_url: str) -> Self:
        return dataclasses.replace(self, db_url=db_url)

    def with_broker(self, broker_url: str) -> Self:
        return dataclasses.replace(self, broker=broker_url)

    def with_dags(self, folder: Path) -> Self:
        return dataclasses.replace(self, dags=folder)

    def env(self) -> dict[str, str]:
        """The environment of every subprocess (workers, CLI, Flower)."""
        return importable(
            {
                **os.environ,
                "BACKFILL_HOME": str(self.home),
                "BACKFILL_DATABASE_URL": self.db_url,
                "BACKFILL_BROKER_URL": self.broker_url,
                "BACKFILL_DAGS_FOLDER": str(self.dags),
                "BACKFILL_HEARTBEAT_INTERVAL": repr(self.heartbeat_interval),
                "BACKFILL_HEARTBEAT_TIMEOUT": repr(self.heartbeat_timeout),
                "BACKFILL_QUEUED_TIMEOUT": repr(self.queued_timeout),
                LEDGER_ENV: str(self.ledger.path),
                GATES_ENV: str(self.gates),
                "PYTHONUNBUFFERED": "1",
                **({"BACKFILL_MESSAGE_KEY": self.message_key} if self.message_key else {}),
            }
        )

    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def dag(self, dag_id: str) -> DAG:
        return load_dags(self.dags).get(dag_id)

    def open_gate(self, key: Key) -> None:
        dag_id, task_id, logical_date, try_number = key
        name = gate_name(dag_id, task_id, logical_date.isoformat(), try_number)
        (self.gates / name).touch()
