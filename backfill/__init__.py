"""Backfill: a distributed backfill engine for Celery worker fleets.

The public API: for DAG authors `DAG`, `Context`, `CallbackContext` (what a
callback receives), `Skip`, `Reschedule` and `TriggerRule`; for programs that
make and operate backfills, `Client` (imported on first use: a DAG file that
imports `backfill` does not load the database and broker libraries the client
needs).
"""

from typing import TYPE_CHECKING, Any

from backfill.errors import BackfillError
from backfill.model.callbacks import CallbackContext
from backfill.model.context import Context, Reschedule, Skip
from backfill.model.dag import DAG
from backfill.model.task_options import TriggerRule

if TYPE_CHECKING:
    from backfill.client.client import Client

__all__ = [
    "DAG",
    "BackfillError",
    "CallbackContext",
    "Client",
    "Context",
    "Reschedule",
    "Skip",
    "TriggerRule",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from backfill.client.client import Client

        return Client
    raise AttributeError(f"module 'backfill' has no attribute {name!r}")
