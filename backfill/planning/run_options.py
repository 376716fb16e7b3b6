"""The options of one backfill (`backfill run` / `backfill create`). Pure.

Invariants:
- a `RunOptions` is frozen and valid: building one with a bad value raises a
  `UserError` naming the command-line flag, so nothing downstream re-checks;
- choices are policy enums, never a pile of booleans; every field has a
  default, so adding a field never breaks an existing caller;
- `as_json()` / `from_json()` round-trip: the options are stored with the
  backfill, and a resumed backfill runs with the options it was created with.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from backfill.errors import UserError
from backfill.model.task_options import MAX_ID_LENGTH
from backfill.planning.errors import BadConf

MAX_CONF_BYTES = 64 * 1024
_POOL_NAME = re.compile(r"[\w.-]+")  # the rule of `backfill pools set` (Airflow's KEY_REGEX)


class ReprocessPolicy(enum.StrEnum):
    """Which existing, finished runs a backfill runs again (Airflow 3's `--reprocess-behavior`)."""

    NONE = "none"  # never: an existing run is skipped
    FAILED = "failed"  # failed runs: their unsuccessful TIs run again
    COMPLETED = "completed"  # failed and successful runs: every TI runs again


class FailurePolicy(enum.StrEnum):
    """What a failed TI does to the rest of the backfill."""

    STOP = "stop"  # no new run starts; in-flight work finishes; exit 1
    CONTINUE = "continue"  # `--continue-on-failures`: every run still runs


class Execution(enum.StrEnum):
    RUN = "run"
    MARK_SUCCESS = "mark_success"  # `--mark-success`: queued and limited, never executed


class Order(enum.StrEnum):
    FORWARD = "forward"  # oldest logical date first
    BACKWARD = "backward"  # `--run-backwards`: newest first


class DependsOnPast(enum.StrEnum):
    STRICT = "strict"  # a TI waits for the same task at the previous logical date
    IGNORE_FIRST = "ignore_first"  # `--ignore-first-depends-on-past`: not on the first date


class Dependencies(enum.StrEnum):
    ENFORCE = "enforce"
    IGNORE = "ignore"  # `--ignore-dependencies`: trigger rules and upstreams are not checked


class Retries(enum.StrEnum):
    AS_DECLARED = "as_declared"
    DISABLED = "disabled"  # `--disable-retry`: a failed try fails the TI


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything that shapes one backfill besides its DAG and range; stored with it."""

    reprocess: ReprocessPolicy = ReprocessPolicy.NONE
    conf: dict[str, Any] = field(default_factory=dict)
    # The backfill's own rolling window of active runs; None: the DAG's max_active_runs.
    max_active_runs: int | None = None
    rerun_failed_tasks: bool = False  # existing failed/upstream_failed TIs run again
    on_failure: FailurePolicy = FailurePolicy.STOP
    execution: Execution = Execution.RUN
    order: Order = Order.FORWARD
    depends_on_past: DependsOnPast = DependsOnPast.STRICT
    dependencies: Dependencies = Dependencies.ENFORCE
    retries: Retries = Retries.AS_DECLARED
    task_regex: str | None = None  # only tasks whose id matches (re.search); upstreams optional
    pool: str | None = None  # overrides every task's pool

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind = _ENUMS.get(f.name)
            value = getattr(self, f.name)
            if kind is not None and not isinstance(value, kind):
                object.__setattr__(self, f.name, _enum(kind, f.name, value))
        _check_conf(self.conf)
        value = self.max_active_runs
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise UserError(f"--max-active-runs must be an integer >= 1, got {value!r}")
        if not isinstance(self.rerun_failed_tasks, bool):
            raise UserError(f"--rerun-failed-tasks is a flag, got {self.rerun_failed_tasks!r}")
        _check_task_regex(self.task_regex)
        _check_pool(self.pool)

    def selects(self, task_id: str) -> bool:
        """Whether `--task-regex` selects this task (every task without it)."""
        return self.task_regex is None or re.search(self.task_regex, task_id) is not None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: enums as their values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_task_regex(pattern: object) -> None:
    if pattern is None:
        return
    if not isinstance(pattern, str):
        raise UserError(f"--task-regex must be a regular expression, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UserError(f"--task-regex {pattern!r} is not a regular expression: {exc}") from None


def _check_pool(name: object) -> None:
    if name is None:
        return
    if not isinstance(name, str) or not _POOL_NAME.fullmatch(name) or len(name) > MAX_ID_LENGTH:
        raise UserError(
            f"--pool must be a pool name (1 to {MAX_ID_LENGTH} letters, digits, '_', '.' "
            f"or '-'), got {name!r}"
        )


def _jsonable(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


_ENUMS: dict[str, type[enum.StrEnum]] = {
    "reprocess": ReprocessPolicy,
    "on_failure": FailurePolicy,
    "execution": Execution,
    "order": Order,
    "depends_on_past": DependsOnPast,
    "dependencies": Dependencies,
    "retries": Retries,
}


def _enum(kind: type[enum.StrEnum], name: str, value: object) -> enum.StrEnum:
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(p.value for p in kind)
        flag = "--" + name.replace("_", "-")
        raise UserError(f"{flag} must be one of {choices}, got {value!r}") from None


def parse_conf(text: str) -> dict[str, Any]:
    """`--conf`: a JSON object of at most 64 KiB, else `BadConf` saying what is wrong."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_CONF_BYTES:
        _too_large(size)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadConf(
            f"--conf is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise BadConf(
            f'--conf must be a JSON object like \'{{"key": "value"}}\', got {_json_kind(value)}'
        )
    return value


def _check_conf(conf: object) -> None:
    if not isinstance(conf, dict):
        raise BadConf(f"--conf must be a JSON object, got {_json_kind(conf)}")
    try:
        encoded = json.dumps(conf, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise BadConf(f"--conf must be plain JSON data: {exc}") from None
    if len(encoded.encode("utf-8", errors="surrogatepass")) > MAX_CONF_BYTES:
        _too_large(len(encoded.encode("utf-8", errors="surrogatepass")))


def _too_large(size: int) -> NoReturn:
    raise BadConf(
        f"--conf is {size} bytes; at most {MAX_CONF_BYTES} bytes (64 KiB) are allowed, "
        "pass large data by reference (a path or URL) instead"
    )


def _refuse_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; PostgreSQL's json type would refuse them later.
    raise BadConf(f"--conf is not valid JSON: {name} is not a JSON value")


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
