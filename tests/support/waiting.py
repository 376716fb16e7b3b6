"""Waiting on a condition with a deadline: never sleep-and-hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail the
    test after `timeout` seconds, naming `what` and adding `explain()` (e.g. logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{detail}", False)
        time.sleep(interval)
