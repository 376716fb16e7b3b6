"""The worker side of Backfill: the Celery app (`workers.app`) and its one task.

`celery -A workers worker` and `celery -A workers flower` find `app` here:
an app configured from the environment (`Settings.from_env`). It is built on
first access, not at import: importing `workers.app` with other settings (as
tests and the bench do) must neither read the environment nor create the
embedded broker's folders under the current directory. The coordinator never
imports this package: it publishes with `backfill.broker.app.make_celery`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def __getattr__(name: str) -> Celery:
    # PEP 562: called only for names the module does not have yet.
    if name not in ("app", "celery"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from backfill.config import Settings
    from workers.app import make_app

    instance = make_app(Settings.from_env())
    # Importing the submodule `workers.app` bound the name `app` to it: rebind
    # both names Celery looks up (`app`, then `celery`) to the instance.
    globals().update(app=instance, celery=instance)
    return instance
