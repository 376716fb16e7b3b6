"""The workers' Celery app: the shared app (`backfill.broker.app`) with the task
that runs a TI try (`workers.tasks`) registered for `settings`."""

from __future__ import annotations

from celery import Celery

from backfill.broker.app import make_celery
from backfill.config import Settings
from workers.tasks import register


def make_app(settings: Settings) -> Celery:
    """A Celery app on `settings.broker_url`, with the task registered for `settings`."""
    app = make_celery(settings)
    register(app, settings)
    return app
