"""Backfill: a distributed backfill engine for Celery worker fleets.

The public API for DAG authors: `DAG`, `Context`, `Skip`, `Reschedule`.
"""

from backfill.errors import BackfillError
from backfill.model.context import Context, Reschedule, Skip
from backfill.model.dag import DAG
from backfill.model.task_options import TriggerRule

__all__ = ["DAG", "BackfillError", "Context", "Reschedule", "Skip", "TriggerRule"]
