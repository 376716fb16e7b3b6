"""The options `backfill run` and `backfill create` share: flags in, one `RunOptions` out.

Invariants:
- the flags carry DESIGN section 4's names and each maps to one field of the
  frozen `RunOptions`, whose policy enums say what a flag changes; building
  it validates every value, so a bad flag exits 2 before anything is read;
- `describe` renders the options for the dry run with the flag names a user
  types, so what they asked for is what they read back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from backfill.client.options import SWITCHES, options_from_flags
from backfill.model.dag import DAG
from backfill.planning.run_options import ReprocessPolicy, RunOptions

_CONF_SHOWN = 200  # characters of --conf echoed in the dry run's header

_FLAGS = (
    click.option(
        "--reprocess",
        type=click.Choice([p.value for p in ReprocessPolicy]),
        default=ReprocessPolicy.NONE.value,
        show_default=True,
        help="Existing finished runs to run again: none, failed runs, or failed and successful.",
    ),
    click.option(
        "--rerun-failed-tasks",
        is_flag=True,
        help="Run again the failed and upstream_failed TIs of existing finished runs "
        "(never their successful ones).",
    ),
    click.option(
        "--mark-success",
        is_flag=True,
        help="Mark every TI success without running it (still queued and limited).",
    ),
    click.option(
        "--run-backwards",
        is_flag=True,
        help="Start the newest date first (refused when a task has depends_on_past).",
    ),
    click.option(
        "--ignore-first-depends-on-past",
        is_flag=True,
        help="On the first date, depends_on_past does not wait for an earlier date.",
    ),
    click.option(
        "--ignore-dependencies",
        is_flag=True,
        help="Run TIs without waiting for their upstream tasks (trigger rules ignored).",
    ),
    click.option(
        "--task-regex",
        metavar="RE",
        help="Only the tasks whose id matches RE (re.search); upstreams outside it are "
        "not required.",
    ),
    click.option("--pool", metavar="NAME", help="Run every TI in pool NAME, not its task's."),
    click.option("--conf", metavar="JSON", help="A JSON object passed to every task as ctx.conf."),
    click.option(
        "--max-active-runs",
        type=int,
        metavar="N",
        help="Runs in flight at once (a rolling window); default: the DAG's max_active_runs.",
    ),
    click.option(
        "--continue-on-failures",
        is_flag=True,
        help="Keep starting runs after a TI failed (default: start none, finish what is "
        "in flight, exit 1).",
    ),
    click.option(
        "--disable-retry", is_flag=True, help="A failed try fails its TI, whatever its retries."
    ),
)


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared flags to a command, which receives them as `options: RunOptions`."""
    names = ("reprocess", "conf", "max_active_runs", "task_regex", "pool", *SWITCHES)

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in names}
        return fn(*args, options=options_from_flags(**flags), **kwargs)

    for option in reversed(_FLAGS):
        build = option(build)
    return build


def describe(options: RunOptions, dag: DAG, selected: tuple[str, ...]) -> list[str]:
    """The dry run's header lines: every option, then the tasks selected."""
    conf = json.dumps(options.conf, ensure_ascii=False)
    if len(conf) > _CONF_SHOWN:
        conf = conf[:_CONF_SHOWN] + "..."
    limit = options.max_active_runs or f"{dag.max_active_runs} (the DAG's)"
    flags = [f"--{flag.replace('_', '-')}" for flag, (name, value) in SWITCHES.items()
             if getattr(options, name) == value]  # fmt: skip
    pool = f"every TI in pool {options.pool}" if options.pool else "each task's own"
    lines = [
        f"reprocess={options.reprocess.value}, max_active_runs={limit}, conf={conf}",
        f"flags: {', '.join(flags) or 'none'}; pool: {pool}",
    ]
    if options.task_regex is None:
        lines.append(f"tasks: all {len(selected)}")
    else:
        lines.append(
            f"tasks: {len(selected)} of {len(dag.tasks)} selected by --task-regex "
            f"{options.task_regex!r}: {', '.join(selected)}"
        )
    return lines
