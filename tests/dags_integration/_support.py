"""Task bodies shared by the integration DAGs, recording to the execution ledger.

Not a DAG file (the leading `_` keeps discovery away); the DAG files beside it
import it (the DAGs folder is importable). The ledger and the gates are the
harness's (`tests/support/ledger.py`): one format for every test DAG.
"""

from __future__ import annotations

import random
import time
from typing import Any

from support.ledger import record, wait_for_gate

__all__ = ["gated", "held_first_try", "record", "timed"]


def timed(ctx: Any, low: float, high: float) -> None:
    """A task body: record start, sleep a random time in [low, high] seconds, record end."""
    record("start", ctx)
    time.sleep(random.uniform(low, high))
    record("end", ctx)


def gated(ctx: Any) -> None:
    """A task body: record start, block until the test opens this try's gate, record end."""
    record("start", ctx)
    wait_for_gate(ctx)
    record("end", ctx)


def held_first_try(ctx: Any) -> None:
    """Try 1 blocks on its gate, then fails late; any later try succeeds at once.

    A late outcome of try 1 that got through its fencing would turn the TI
    into failed/up_for_retry with this error, which the tests look for. A
    worker that stops try 1 while it waits (`Interrupted`, raised when its
    claim is lost) shows in the ledger as `stopped:Interrupted`, never `after`.
    """
    record("start", ctx)
    if ctx.try_number == 1:
        try:
            wait_for_gate(ctx)
        except BaseException as exc:  # Interrupted is a BaseException, like KeyboardInterrupt
            record(f"stopped:{type(exc).__name__}", ctx)
            raise
        record("after", ctx)
        raise RuntimeError("late outcome of try 1")
    record("end", ctx)
