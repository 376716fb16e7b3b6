"""TaskFlow: a task called inside the DAG declaration passes its result to another, as
Airflow's `@task` does (`load(transform(extract()))`). Pure: no I/O.

Invariants:
- calling a task with no Context declares, never runs: `b(a())` makes b depend
  on a and binds a's result (an `Output`) to b's parameter; `a()` alone is a's
  `Output`. A task is bound once (calling it twice would mean a second task in
  Airflow, whose ids here are the author's: declare another task instead);
- a bound value is an `Output` of a task of the same DAG, or a JSON value
  (kept as given): what is bound is part of the DAG's fingerprint;
- the arguments must fit the function's parameters after the Context, checked
  when declared; a task whose parameters are left unbound is refused when its
  DAG file is loaded (`check_bound`);
- at run time (`resolve`) each `Output` becomes `ctx.result(task_id)`, read by
  the worker: the upstream's return value in the same run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfill.model.context import Context
from backfill.model.errors import DagDefinitionError

if TYPE_CHECKING:
    from backfill.model.task import Task


class Output:
    """The result of a task, to pass to another task's parameter. `>>` and `<<` on it act
    on its task, as on Airflow's XComArg."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __repr__(self) -> str:
        return f"<Output of {self.task.task_id}>"

    def __rshift__(self, other: Any) -> Any:
        return self.task >> other

    def __lshift__(self, other: Any) -> Any:
        return self.task << other

    def __rrshift__(self, other: Any) -> Any:
        return other >> self.task

    def __rlshift__(self, other: Any) -> Any:
        return other << self.task


@dataclass(frozen=True)
class Arguments:
    """What a task's parameters after the Context are bound to."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def outputs(self) -> list[Output]:
        values = [*self.args, *self.kwargs.values()]
        return [v for v in values if isinstance(v, Output)]

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for `dags show` and the fingerprint."""
        return {
            "args": [_described(v) for v in self.args],
            "kwargs": {k: _described(v) for k, v in sorted(self.kwargs.items())},
        }

    def resolve(self, ctx: Context) -> tuple[list[Any], dict[str, Any]]:
        """The values to call with: each `Output` read as its task's result in `ctx`'s run."""

        def value(v: Any) -> Any:
            return ctx.result(v.task.task_id) if isinstance(v, Output) else _copied(v)

        return [value(v) for v in self.args], {k: value(v) for k, v in self.kwargs.items()}


def bind(task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Arguments:
    """Check `args` and `kwargs` against `task`'s function and values (see the invariants)."""
    owner = f"task {task.task_id!r} of DAG {task.dag.dag_id!r}"
    for value in [*args, *kwargs.values()]:
        if isinstance(value, Output):
            if value.task.dag is not task.dag:
                raise DagDefinitionError(
                    f"{owner}: {value.task.task_id!r} is a task of another DAG; results pass "
                    "between tasks of the same DAG"
                )
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise DagDefinitionError(
                f"{owner}: the argument {value!r} is neither a task's result (`other()`) nor a "
                "JSON value"
            ) from None
    try:
        inspect.signature(task.fn).bind(None, *args, **kwargs)
    except TypeError as exc:
        raise DagDefinitionError(f"{owner}: {exc} (after its Context)") from None
    return Arguments(tuple(args), dict(kwargs))


def check_bound(task: Task, arguments: Arguments | None, mapped: Sequence[str] = ()) -> None:
    """Refuse a task whose function has parameters after the Context left unbound
    (`mapped`: the parameters `expand` gives)."""
    bound = arguments or Arguments((), {})
    try:
        inspect.signature(task.fn).bind(None, *bound.args, **bound.kwargs, **dict.fromkeys(mapped))
    except TypeError:
        raise DagDefinitionError(
            f"task {task.task_id!r} of DAG {task.dag.dag_id!r} takes parameters after its "
            f"Context that nothing passes: call it in the DAG file with their values, e.g. "
            f"{task.task_id.rpartition('.')[2]}(upstream())"
        ) from None
    except ValueError:  # builtins without a signature: they fail at run time
        pass


def takes_a_context(fn: Callable[..., object]) -> bool:
    """Whether `fn` can be called with the Context as its first argument."""
    try:
        inspect.signature(fn).bind_partial(None)
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: accept, they fail at run time
        return True
    return True


def _described(value: Any) -> Any:
    return {"result_of": value.task.task_id} if isinstance(value, Output) else value


def _copied(value: Any) -> Any:
    """A literal, fresh for each try: a task mutating its argument changes nothing else."""
    return json.loads(json.dumps(value))
