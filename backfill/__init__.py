"""Backfill: a distributed backfill engine for Celery worker fleets.

The public API for DAG authors: `DAG`, `Context`, `Skip`, `Reschedule`.
"""

from backfill.context import Context, Reschedule, Skip
from backfill.dag import DAG
from backfill.errors import BackfillError
from backfill.task_options import TriggerRule

__all__ = ["DAG", "BackfillError", "Context", "Reschedule", "Skip", "TriggerRule"]
