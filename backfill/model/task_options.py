"""Task options: Airflow's names and defaults, validated when declared. Pure.

The callback options (`model.callbacks`) are options like the others, but not
part of a task's shape: `as_json` (hence `dags show` and the DAG's fingerprint)
leaves them out, as it leaves out the task's own callable.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from backfill.model.callbacks import TASK_CALLBACKS, Callbacks, check_callbacks
from backfill.model.errors import DagDefinitionError

# Ids and names end up in run ids, log lines and String(250) columns.
MAX_ID_LENGTH = 250


class TriggerRule(enum.StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALL_SKIPPED = "all_skipped"
    ALWAYS = "always"


DEFAULT_POOL = "default_pool"
DEFAULT_QUEUE = "default"
_CALLBACK = {"callback": True}  # a field's metadata: left out of `as_json`


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """Per-task options, with Airflow's names and defaults."""

    retries: int = 0
    retry_delay: timedelta = timedelta(minutes=5)
    retry_exponential_backoff: bool = False
    max_retry_delay: timedelta | None = None
    depends_on_past: bool = False
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    pool: str = DEFAULT_POOL
    pool_slots: int = 1
    priority_weight: int = 1
    max_active_tis_per_dag: int | None = None
    queue: str = DEFAULT_QUEUE
    execution_timeout: timedelta | None = None
    # Run by the worker after the try's outcome is recorded (`workers.callbacks`).
    on_success_callback: Callbacks = field(default=(), metadata=_CALLBACK)
    on_failure_callback: Callbacks = field(default=(), metadata=_CALLBACK)
    on_retry_callback: Callbacks = field(default=(), metadata=_CALLBACK)

    @classmethod
    def build(cls, owner: str, values: Mapping[str, Any]) -> TaskOptions:
        """Validate `values` (option name -> value) for `owner`, e.g. "task 'a' of DAG 'x'"."""
        unknown = sorted(set(values) - OPTION_NAMES)
        if unknown:
            raise DagDefinitionError(
                f"{owner}: unknown option {', '.join(map(repr, unknown))}; "
                f"known options are {', '.join(sorted(OPTION_NAMES))}"
            )
        checked = {name: _check_option(owner, name, value) for name, value in values.items()}
        return cls(**checked)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready form: durations in seconds, enums as their values; no callbacks."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("callback"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, timedelta):
                value = value.total_seconds()
            elif isinstance(value, enum.Enum):
                value = value.value
            out[f.name] = value
        return out


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TaskOptions))


def _check_option(owner: str, name: str, value: Any) -> Any:
    def bad(expected: str) -> DagDefinitionError:
        return DagDefinitionError(f"{owner}: option {name!r} must be {expected}, got {value!r}")

    def is_int(v: Any) -> bool:  # bool is an int subclass; `retries=True` is a mistake
        return isinstance(v, int) and not isinstance(v, bool)

    if name in TASK_CALLBACKS:
        return check_callbacks(owner, name, value)
    match name:
        case "trigger_rule":
            try:
                return TriggerRule(value)
            except ValueError:
                raise bad(f"one of {', '.join(r.value for r in TriggerRule)}") from None
        case "retries" if not is_int(value) or value < 0:
            raise bad("a non-negative integer")
        case "priority_weight" if not is_int(value):
            raise bad("an integer")
        case "pool_slots" if not is_int(value) or value < 1:
            raise bad("an integer >= 1")
        case "max_active_tis_per_dag" if value is not None and (not is_int(value) or value < 1):
            raise bad("an integer >= 1 or None")
        case "retry_exponential_backoff" | "depends_on_past" if not isinstance(value, bool):
            raise bad("True or False")
        case "pool" | "queue" if (
            not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH
        ):
            raise bad(f"a non-empty string of at most {MAX_ID_LENGTH} characters")
        case "retry_delay" if not isinstance(value, timedelta) or value < timedelta(0):
            raise bad("a non-negative timedelta")
        case "max_retry_delay" | "execution_timeout" if value is not None and (
            not isinstance(value, timedelta) or value <= timedelta(0)
        ):
            raise bad("a positive timedelta or None")
    return value
