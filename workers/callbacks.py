"""A try's callbacks, run by the worker once its outcome is recorded.

Invariants:
- FENCED: they run only after the try's fenced finish wrote its outcome
  (`claims.finish` returned True). A try that lost its claim (reaped, cleared,
  cancelled) has its outcome discarded and runs no callback, as Airflow runs none
  for a state set from outside the try (its "marked success/failed externally").
- One event per try: `success` -> `on_success_callback`, `failed` ->
  `on_failure_callback`, `up_for_retry` -> `on_retry_callback` (Airflow's
  `handle_failure`); `skipped` and `up_for_reschedule` call none. A TI the
  coordinator decides without running it (upstream_failed, skipped, failed with
  retries disabled) and a try the coordinator reaps get none either: no worker
  ran them. A `--mark-success` try runs `on_success_callback`, as Airflow's
  `_run_raw_task(mark_success=True)` does.
- A callback that raises is logged with the TI key and changes nothing
  (`backfill.callbacks`).
- Hazard, a slow callback: it runs after the outcome is committed and after the
  try's heartbeat has stopped, so it can neither hold a row lock nor keep a try
  alive; nothing fences or reaps it. At worst it holds the worker slot (and the
  message, acked late) for as long as it runs. If the worker dies meanwhile, the
  redelivered message loses the claim race (the TI is no longer queued for that
  try): a callback runs at most once, never twice.
"""

from __future__ import annotations

from collections.abc import Callable

from backfill.callbacks import invoke
from backfill.model.callbacks import callback_context
from backfill.model.context import Context
from backfill.model.states import TIState
from backfill.model.task import Task

_EVENTS = {
    TIState.SUCCESS: "on_success_callback",
    TIState.FAILED: "on_failure_callback",
    TIState.UP_FOR_RETRY: "on_retry_callback",
}


def after_outcome(
    task: Task,
    context: Callable[[], Context],
    state: TIState,
    *,
    error: str | None,
    key: str,
) -> None:
    """Run `task`'s callbacks for the recorded outcome `state` of the try whose Context
    `context()` builds (only when there is a callback to run: most tasks have none)."""
    event = _EVENTS.get(state)
    if event is None:
        return
    callbacks = getattr(task.options, event)
    if callbacks:
        exception = None if state is TIState.SUCCESS else error
        invoke(callbacks, callback_context(context(), exception=exception), event=event, key=key)
