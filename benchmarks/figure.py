"""One figure of the bench: a value, its unit, its target and whether it was met."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MB = 1e6  # the targets' megabyte

Figure = dict[str, Any]


def figure(
    key: str,
    label: str,
    value: float | None,
    unit: str,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    detail: str = "",
) -> Figure:
    """One row; `met` from whichever bound is given (None: no target)."""
    target, met = None, None
    checks: list[tuple[float | None, str, Callable[[float, float], bool]]] = [
        (at_least, ">=", lambda v, t: v >= t),
        (at_most, "<=", lambda v, t: v <= t),
        (below, "<", lambda v, t: v < t),
    ]
    for bound, sign, ok in checks:
        if bound is not None:
            target = f"{sign} {bound:g}"
            met = value is not None and ok(value, bound)
    return {
        "key": key,
        "label": label,
        "value": value,
        "unit": unit,
        "target": target,
        "met": met,
        "detail": detail,
    }
