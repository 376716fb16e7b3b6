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
from dataclasses import dataclass, field
from typing import Any, NoReturn

from backfill.errors import BadConf, UserError

MAX_CONF_BYTES = 64 * 1024


class ReprocessPolicy(enum.StrEnum):
    """Which existing, finished runs a backfill runs again (Airflow 3's `--reprocess-behavior`)."""

    NONE = "none"  # never: an existing run is skipped
    FAILED = "failed"  # failed runs: their unsuccessful TIs run again
    COMPLETED = "completed"  # failed and successful runs: every TI runs again


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    reprocess: ReprocessPolicy = ReprocessPolicy.NONE
    conf: dict[str, Any] = field(default_factory=dict)
    # The backfill's own rolling window of active runs; None: the DAG's max_active_runs.
    max_active_runs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reprocess, ReprocessPolicy):
            object.__setattr__(self, "reprocess", _reprocess(self.reprocess))
        _check_conf(self.conf)
        value = self.max_active_runs
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise UserError(f"--max-active-runs must be an integer >= 1, got {value!r}")

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: enums as their values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _jsonable(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def _reprocess(value: object) -> ReprocessPolicy:
    try:
        return ReprocessPolicy(str(value))
    except ValueError:
        choices = ", ".join(p.value for p in ReprocessPolicy)
        raise UserError(f"--reprocess must be one of {choices}, got {value!r}") from None


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
