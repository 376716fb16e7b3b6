"""Paging of the read-only listings (`backfill list`, `backfill tasks`).

Invariants:
- `--limit N` and `--offset M`; a `--limit` not given leaves the command's
  default, `--limit 0` means every row;
- a listing that shows fewer rows than match says which rows it showed and
  which flags show the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def page_limit(given: int | None, default: int | None) -> int | None:
    """`--limit` as the store takes it: None for no limit (`0` on the command line)."""
    value = default if given is None else given
    return value or None


def paging_options(what: str, *, defaults: str) -> Callable[[F], F]:
    """`--limit N` (None when not given: the command applies its default) and `--offset M`."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--offset",
            type=click.IntRange(min=0),
            default=0,
            metavar="M",
            help=f"Skip the first M {what}.",
        )(fn)
        return click.option(
            "--limit",
            type=click.IntRange(min=0),
            metavar="N",
            help=f"At most N {what} (default: {defaults}; 0: all).",
        )(fn)

    return decorate


def showing(what: str, offset: int, shown: int, total: int, hint: str) -> str:
    if shown == 0:
        return f"no {what} from offset {offset}: {total} in all; use a smaller --offset"
    return f"showing {what} {offset + 1}-{offset + shown} of {total}; use {hint} to see others"
