"""The run options of `run`, `create` and `POST /api/v1/backfills`: named flags in, one
frozen `RunOptions` out.

Invariants:
- a flag's name is DESIGN section 4's, with `_` for `-` (`--task-regex` is
  `task_regex`), on the command line and in a JSON body alike;
- building `RunOptions` validates every value (`UserError` on a bad one), so a
  bad option is refused before anything is read or written.
"""

from __future__ import annotations

from typing import Any

from backfill.planning.run_options import (
    Dependencies,
    DependsOnPast,
    Execution,
    FailurePolicy,
    Order,
    ReprocessPolicy,
    Retries,
    RunOptions,
    parse_conf,
)

# Each on/off flag -> (field of RunOptions, its value when the flag is given).
SWITCHES: dict[str, tuple[str, object]] = {
    "rerun_failed_tasks": ("rerun_failed_tasks", True),
    "mark_success": ("execution", Execution.MARK_SUCCESS),
    "run_backwards": ("order", Order.BACKWARD),
    "ignore_first_depends_on_past": ("depends_on_past", DependsOnPast.IGNORE_FIRST),
    "ignore_dependencies": ("dependencies", Dependencies.IGNORE),
    "continue_on_failures": ("on_failure", FailurePolicy.CONTINUE),
    "disable_retry": ("retries", Retries.DISABLED),
}


def options_from_flags(
    *,
    reprocess: str = ReprocessPolicy.NONE.value,
    conf: str | None = None,
    max_active_runs: int | None = None,
    task_regex: str | None = None,
    pool: str | None = None,
    **switches: bool,
) -> RunOptions:
    """The `RunOptions` the flags ask for (`UserError` on a bad value)."""
    values: dict[str, Any] = {
        "reprocess": reprocess,  # RunOptions checks it, naming the choices
        "conf": {} if conf is None else parse_conf(conf),
        "max_active_runs": max_active_runs,
        "task_regex": task_regex,
        "pool": pool,
    }
    values.update(SWITCHES[flag] for flag, given in switches.items() if given)
    return RunOptions(**values)
