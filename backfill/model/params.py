"""A DAG's `params`: defaults a task reads as `ctx.params`, overridden by a run's conf.

Invariants:
- params are a JSON object: string keys and JSON-serialisable values (no NaN or
  infinity, which JSON cannot carry); anything else is refused when the DAG is
  declared, naming the offending key;
- the DAG keeps the JSON round trip of what its author passed (tuples become
  lists), so a task sees the same types whether a value came from the DAG or
  from `--conf`, and later changes to the author's dict cannot reach it;
- `merge` returns a fresh dict on every call: a task that mutates its
  `ctx.params` never changes the DAG's defaults or another try's params.

Airflow's `Param` objects (JSON-schema validated values) are not supported:
plain values only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backfill.model.errors import DagDefinitionError


def check_params(owner: str, params: object) -> dict[str, Any]:
    """Validate a DAG's `params` (None means none); `owner` starts every error message."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise DagDefinitionError(
            f"{owner}: params must be a dict of JSON values, got {type(params).__name__}"
        )
    for key, value in params.items():
        if not isinstance(key, str):
            raise DagDefinitionError(f"{owner}: params keys must be strings, got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DagDefinitionError(
                f"{owner}: params[{key!r}] is not JSON-serialisable ({exc}); use strings, "
                "numbers, booleans, None, lists and dicts"
            ) from None
    loaded: dict[str, Any] = json.loads(json.dumps(dict(params), allow_nan=False))
    return loaded


def merge(params: Mapping[str, Any], conf: Mapping[str, Any]) -> dict[str, Any]:
    """The params a try sees: the DAG's, with each top-level key of the run's conf on top.

    Airflow's `dag_run_conf_overrides_params` (True by default) does the same
    shallow `params.update(dag_run.conf)`: a conf key replaces the whole value,
    nested dicts are not merged, and conf keys the DAG never declared are added.
    """
    merged: dict[str, Any] = json.loads(json.dumps(dict(params)))  # a deep, fresh copy
    merged.update(json.loads(json.dumps(dict(conf))))
    return merged
