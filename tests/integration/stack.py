"""What the processes of one integration test share, and how the test observes them.

- `Stack`: database URL, private Redis DB, DAGs folder, timeouts, ledger and
  gates; `env()` for subprocesses, `settings()` for in-process coordinators.
- the module's Redis DB: `support.private_redis` (one index per test module,
  emptied key by key, never FLUSHALL);
- `Ledger`: the execution ledger the integration DAGs append to (format and
  atomicity in tests/dags_integration/_support.py).
Every wait of these tests is a condition polled against a deadline, never a bare
sleep (`support.waiting.wait_until`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pendulum
from support.private_redis import PrivateRedis

from backfill.config import Settings
from backfill.model.dag import DAG
from backfill.model.discovery import load_dags

T = TypeVar("T")

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "tests" / "dags_integration"


def _load_support() -> ModuleType:
    # The DAG files' helper, under the name they import it by (`import _support`, their
    # folder being on sys.path once loaded): one module in this process, whoever loads it first.
    name = "_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DAGS / "_support.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {DAGS / '_support.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support: Any = _load_support()


def utc(day: str) -> pendulum.DateTime:
    parsed = pendulum.parse(day, tz="UTC")
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


# --- Redis -----------------------------------------------------------------------------


# --- ledger ----------------------------------------------------------------------------

Key = tuple[str, str, datetime, int]  # (dag_id, task_id, logical_date, try_number)


@dataclass(frozen=True)
class Entry:
    event: str  # start / end / after
    dag_id: str
    task_id: str
    logical_date: datetime
    try_number: int
    pid: int
    at: float  # time.monotonic() in the worker: one clock for every process

    @property
    def key(self) -> Key:
        return (self.dag_id, self.task_id, self.logical_date, self.try_number)


@dataclass(frozen=True)
class Ledger:
    """The execution ledger of one test: one line per callable start / end."""

    path: Path

    def entries(self, event: str | None = None) -> list[Entry]:
        if not self.path.exists():
            return []
        # A line is complete once its newline is in; a reader polling while a
        # worker appends may see the start of a line: it is read next time.
        *lines, _partial = self.path.read_text().split("\n")
        out = []
        for line in lines:
            raw = json.loads(line)
            entry = Entry(
                event=raw["event"],
                dag_id=raw["dag_id"],
                task_id=raw["task_id"],
                logical_date=datetime.fromisoformat(raw["logical_date"]),
                try_number=raw["try_number"],
                pid=raw["pid"],
                at=raw["at"],
            )
            if event is None or entry.event == event:
                out.append(entry)
        return out

    def starts(self) -> Counter[Key]:
        """How many times each try's callable started."""
        return Counter(e.key for e in self.entries("start"))

    def spans(self) -> dict[Key, tuple[float, float]]:
        """(start, end) of every try whose callable ran to its end."""
        starts = {e.key: e.at for e in self.entries("start")}
        return {e.key: (starts[e.key], e.at) for e in self.entries("end") if e.key in starts}

    def first(self, event: str, key: Key) -> Entry | None:
        return next((e for e in self.entries(event) if e.key == key), None)


# --- the stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Everything the processes of one test share: database, broker, DAGs, timeouts."""

    db_url: str
    redis: PrivateRedis
    home: Path
    ledger: Ledger
    gates: Path
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 30.0
    queued_timeout: float = 60.0
    broker: str | None = None  # another broker than the private Redis DB (`with_broker`)

    @classmethod
    def create(cls, db_url: str, private: PrivateRedis, folder: Path) -> Stack:
        home, gates = folder / "home", folder / "gates"
        home.mkdir()
        gates.mkdir()
        return cls(
            db_url=db_url, redis=private, home=home, ledger=Ledger(folder / "ledger"), gates=gates
        )

    @property
    def broker_url(self) -> str:
        return self.broker or self.redis.url

    def with_timeouts(self, **timeouts: float) -> Stack:
        return dataclasses.replace(self, **timeouts)  # type: ignore[arg-type]

    def with_database(self, db_url: str) -> Stack:
        return dataclasses.replace(self, db_url=db_url)

    def with_broker(self, broker_url: str) -> Stack:
        return dataclasses.replace(self, broker=broker_url)

    def env(self) -> dict[str, str]:
        """The environment of every subprocess (workers, CLI, Flower)."""
        return {
            **os.environ,
            "BACKFILL_HOME": str(self.home),
            "BACKFILL_DATABASE_URL": self.db_url,
            "BACKFILL_BROKER_URL": self.broker_url,
            "BACKFILL_DAGS_FOLDER": str(DAGS),
            "BACKFILL_HEARTBEAT_INTERVAL": repr(self.heartbeat_interval),
            "BACKFILL_HEARTBEAT_TIMEOUT": repr(self.heartbeat_timeout),
            "BACKFILL_QUEUED_TIMEOUT": repr(self.queued_timeout),
            support.LEDGER_ENV: str(self.ledger.path),
            support.GATES_ENV: str(self.gates),
            "PYTHONUNBUFFERED": "1",
        }

    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def dag(self, dag_id: str) -> DAG:
        return load_dags(DAGS).get(dag_id)

    def open_gate(self, key: Key) -> None:
        dag_id, task_id, logical_date, try_number = key
        name = support.gate_name(dag_id, task_id, logical_date.isoformat(), try_number)
        (self.gates / name).touch()
