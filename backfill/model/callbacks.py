"""Callbacks: what `on_success_callback`, `on_failure_callback` and `on_retry_callback`
accept, and the context they receive. Pure: validation only; calling them is the
caller's (`backfill.callbacks`).

Invariants, enforced when declared (as every option, `model.task_options`):
- a callback option is None, one callable, or a list (or tuple) of callables, as
  Airflow accepts (a list since Airflow 2.6); it is kept as a tuple, `()` for none;
- each callable takes exactly one positional argument, the context.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backfill.model.context import Context
from backfill.model.errors import DagDefinitionError

Callback = Callable[["CallbackContext"], object]
Callbacks = tuple[Callback, ...]

TASK_CALLBACKS = ("on_success_callback", "on_failure_callback", "on_retry_callback")
RUN_CALLBACKS = ("on_success_callback", "on_failure_callback")


@dataclass(frozen=True, kw_only=True)
class CallbackContext(Context):
    """The Context a callback receives: its task instance's, plus what ended it.

    `exception`: the failed try's error (`ExcType: message`), for on_failure and
    on_retry callbacks, as Airflow's `context["exception"]`. `reason`: for a run's
    callbacks, why the run ended: `success`, `task_failure` or
    `all_tasks_deadlocked`, as Airflow's `context["reason"]`.
    """

    exception: str | None = None
    reason: str | None = None


def callback_context(ctx: Context, **extra: Any) -> CallbackContext:
    """`ctx` as a CallbackContext with `extra` (`exception`, `reason`)."""
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(Context)}
    return CallbackContext(**fields, **extra)


def check_callbacks(owner: str, name: str, value: object) -> Callbacks:
    """`value` (None, a callable, or a list or tuple of them) as a tuple; else a
    DagDefinitionError naming `owner` and the option `name`."""
    if value is None:
        return ()
    items: list[object] = list(value) if isinstance(value, list | tuple) else [value]
    checked: list[Callback] = []
    for item in items:
        if not callable(item):
            raise DagDefinitionError(
                f"{owner}: option {name!r} must be a callable or a list of callables, got {item!r}"
            )
        try:
            inspect.signature(item).bind(None)
        except TypeError:
            raise DagDefinitionError(
                f"{owner}: {name} {item!r} must take exactly one argument, the context"
            ) from None
        except ValueError:  # builtins without a signature: accept, they fail when called
            pass
        checked.append(item)
    return tuple(checked)
