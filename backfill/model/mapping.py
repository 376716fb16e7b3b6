"""Dynamic task mapping: one TI per element, as Airflow's `.partial(...).expand(...)`. Pure.

`double.expand(x=[1, 2, 3])` makes three TIs of `double` in each run, map
indexes 0, 1, 2, each called with its own `x`; `double.expand(x=numbers())`
makes one per element of the list `numbers` returned in that run, so their
number is known only at run time. `partial(...)` binds the parameters every
element shares. Several mapped parameters map over their cartesian product
(the first one varies slowest), as in Airflow.

Invariants:
- a mapped parameter is a JSON list given in the DAG file, or a task's result
  (an `Output`, which makes the task depend on it); the element a TI gets is
  decided by its map index alone, from those lists (`element`);
- the coordinator makes a mapped task's TIs once its upstreams allow it to
  run: until then the run holds one placeholder TI (map index -1). Zero
  elements skip the placeholder; a source that is not a list, or more
  elements than the cap, fail it (`length`);
- the result of a mapped task, for a downstream, is the list of its TIs'
  results in map index order (`ctx.result`, `backfill.model.context`);
- a clear that resets a mapped task with one of its sources in the same run
  folds the task back into its placeholder (`foldable`): it maps again over
  the source's new result. Cleared alone, its TIs run again as they were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfill.model.errors import DagDefinitionError
from backfill.model.taskflow import Output

if TYPE_CHECKING:
    from backfill.model.dag import DAG
    from backfill.model.task import Task

DEFAULT_MAX_MAP_LENGTH = 1024  # Airflow's [core] max_map_length


class NotMappable(ValueError):
    """What a mapped task's sources hold cannot be mapped over; the message says why."""


@dataclass(frozen=True)
class Expansion:
    """A mapped task's mapped parameters: each a literal list or an upstream's `Output`."""

    kwargs: Mapping[str, tuple[Any, ...] | Output]

    def sources(self) -> list[str]:
        """The task ids whose results are mapped over, in parameter order."""
        return [v.task.task_id for v in self.kwargs.values() if isinstance(v, Output)]

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for `dags show` and the fingerprint."""
        return {
            name: {"result_of": v.task.task_id} if isinstance(v, Output) else list(v)
            for name, v in self.kwargs.items()
        }

    def lists(self, read: Callable[[str], Any]) -> dict[str, list[Any]]:
        """Each parameter's list; `read(task_id)` gives a source's result. `NotMappable`
        names a source whose result is not a list."""
        out: dict[str, list[Any]] = {}
        for name, v in self.kwargs.items():
            if not isinstance(v, Output):
                out[name] = list(v)
                continue
            value = read(v.task.task_id)
            if not isinstance(value, list):
                raise NotMappable(
                    f"expand({name}=...): the result of {v.task.task_id!r} is "
                    f"{type(value).__name__}, not a list; return a list to map over"
                )
            out[name] = value
        return out

    def length(self, read: Callable[[str], Any], *, cap: int) -> int:
        """How many TIs the task maps to; `NotMappable` over `cap` (BACKFILL_MAX_MAP_LENGTH)."""
        total = math.prod(len(v) for v in self.lists(read).values())
        if total > cap:
            raise NotMappable(
                f"expand(...) makes {total} task instances, over BACKFILL_MAX_MAP_LENGTH "
                f"({cap}); map over fewer elements, or raise the cap"
            )
        return total

    def element(self, map_index: int, read: Callable[[str], Any]) -> dict[str, Any]:
        """The mapped parameters' values for TI `map_index` (the first parameter slowest)."""
        lists = self.lists(read)
        total = math.prod(len(v) for v in lists.values())
        if not 0 <= map_index < total:
            raise NotMappable(
                f"map index {map_index} is out of range: expand(...) now gives {total} "
                "elements (was a source run again since the task was mapped?)"
            )
        out: dict[str, Any] = {}
        rest = map_index
        for name in reversed(list(lists)):
            rest, position = divmod(rest, len(lists[name]))
            out[name] = json.loads(json.dumps(lists[name][position]))  # fresh for each try
        return {name: out[name] for name in lists}


def expansion_of(task: Task, mapped: Mapping[str, Any], partial: Mapping[str, Any]) -> Expansion:
    """Check `task.expand(**mapped)` after `partial(**partial)` (see the invariants)."""
    owner = f"task {task.task_id!r} of DAG {task.dag.dag_id!r}"
    if not mapped:
        raise DagDefinitionError(f"{owner}: expand() needs at least one parameter to map over")
    both = sorted(set(mapped) & set(partial))
    if both:
        raise DagDefinitionError(
            f"{owner}: {', '.join(both)} given to both partial() and expand(); give each "
            "parameter once"
        )
    kwargs: dict[str, tuple[Any, ...] | Output] = {}
    for name, value in mapped.items():
        if isinstance(value, Output):
            kwargs[name] = value
        elif isinstance(value, list | tuple):
            kwargs[name] = tuple(value)
        else:
            raise DagDefinitionError(
                f"{owner}: expand({name}=...) takes a list, or a task's result (`other()`) "
                f"that is a list at run time; got {type(value).__name__}"
            )
    return Expansion(kwargs)


def foldable(dag: DAG, reset: Collection[tuple[int, str]]) -> list[tuple[int, str]]:
    """Of the (run pk, task) pairs whose TIs a clear reset, the mapped tasks to fold back
    into their placeholder (`store.mapping.fold`): those a source of which was reset in
    the same run, so they map again over its new result."""
    out = []
    for pk, task_id in sorted(reset):
        expansion = dag.tasks[task_id].expansion if task_id in dag.tasks else None
        if expansion is not None and any((pk, s) in reset for s in expansion.sources()):
            out.append((pk, task_id))
    return out
