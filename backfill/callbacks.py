"""Calling user callbacks: the worker's task callbacks and the coordinator's run callbacks.

A callback is user code run at a process edge: whatever it raises (an
`Exception`) is logged with the key of what it was called for and swallowed,
and the next callback still runs. It is called only once the outcome it reports
is committed, so nothing it does can change that outcome. `SystemExit` and
`KeyboardInterrupt` propagate: the process is on its way out.
"""

from __future__ import annotations

import logging

from backfill.model.callbacks import CallbackContext, Callbacks

log = logging.getLogger(__name__)


def invoke(callbacks: Callbacks, ctx: CallbackContext, *, event: str, key: str) -> int:
    """Call each of `callbacks` with `ctx`, in order; how many raised. `event` names
    the option (`on_failure_callback`), `key` what it is called for (a TI or a run)."""
    failed = 0
    for callback in callbacks:
        name = getattr(callback, "__qualname__", repr(callback))
        log.info("%s: running %s %s", key, event, name)
        try:
            callback(ctx)
        except Exception:  # user code at a process edge: logged, never the outcome's
            failed += 1
            log.exception("%s: %s %s raised; the outcome stands", key, event, name)
    return failed
