"""A task of a DAG, and the dependency operators `>>` and `<<`. Pure: no I/O.

Invariants:
- `a >> b` makes b depend on a and returns b; either side may be a task, a task
  group (`backfill.model.groups`: its roots on the right of `>>`, its leaves on
  the left) or a list of them; the DAG (`DAG.add_edge`) refuses a cycle and a
  task of another DAG;
- a task is bound once: called (TaskFlow) or mapped (`expand`,
  `backfill.model.mapping`), never both, never twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from backfill.model.context import Context
from backfill.model.errors import DagDefinitionError
from backfill.model.groups import TaskGroup
from backfill.model.mapping import Expansion, expansion_of
from backfill.model.task_options import TaskOptions
from backfill.model.taskflow import Arguments, Output, bind

if TYPE_CHECKING:
    from backfill.model.dag import DAG

TaskCallable = Callable[..., object]  # (ctx, *what TaskFlow binds) -> its result
# What `>>`/`<<` take and return: a task, a group, or a list of them.
_Linked = TypeVar("_Linked", "Task", TaskGroup, Sequence["Task | TaskGroup"])


class Task:
    """One node of a DAG. `a >> b` makes b depend on a and returns b."""

    def __init__(self, dag: DAG, task_id: str, fn: TaskCallable, options: TaskOptions) -> None:
        self.dag = dag
        self.task_id = task_id
        self.fn = fn
        self.options = options
        self.upstream_ids: set[str] = set()
        self.downstream_ids: set[str] = set()
        self.arguments: Arguments | None = None  # TaskFlow: what its parameters get
        self.expansion: Expansion | None = None  # mapped: the parameters mapped over

    def __repr__(self) -> str:
        return f"<Task {self.dag.dag_id}.{self.task_id}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`task(ctx)` runs it (`run`); any other call declares (TaskFlow, in the DAG
        file): `b(a())` binds a's result to b's parameter and makes b depend on a; the
        answer is this task's `Output` (`backfill.model.taskflow`)."""
        if len(args) == 1 and not kwargs and isinstance(args[0], Context):
            return self.run(args[0])
        self._check_unbound("called")
        self.arguments = bind(self, args, kwargs)
        for output in self.arguments.outputs():
            self.dag.add_edge(output.task, self)
        return Output(self)

    def partial(self, **kwargs: Any) -> Partial:
        """Bind the parameters every mapped TI shares: `task.partial(y=1).expand(x=[...])`."""
        return Partial(self, kwargs)

    def expand(self, **mapped: Any) -> Output:
        """Map the task: one TI per element of each list (their product), each called with
        its own values (`backfill.model.mapping`); the answer, as a downstream's
        argument, is the list of their results."""
        return Partial(self, {}).expand(**mapped)

    def _check_unbound(self, how: str) -> None:
        if self.arguments is not None:
            raise DagDefinitionError(
                f"task {self.task_id!r} of DAG {self.dag.dag_id!r} is {how} twice in the "
                "DAG file (a task is called or mapped once); each call would be a task of "
                "its own: declare another task"
            )

    def run(self, ctx: Context) -> object:
        """Run the task's function for `ctx`, its bound arguments read in `ctx`'s run (a
        mapped TI's own elements by its map index)."""
        if self.arguments is None:
            return self.fn(ctx)
        args, kwargs = self.arguments.resolve(ctx)
        if self.expansion is not None:
            kwargs.update(self.expansion.element(ctx.map_index, ctx.result))
        return self.fn(ctx, *args, **kwargs)

    def __rshift__(self, other: _Linked) -> _Linked:
        for downstream in _as_tasks(other, ends="roots"):
            self.dag.add_edge(self, downstream)
        return other

    def __lshift__(self, other: _Linked) -> _Linked:
        for upstream in _as_tasks(other, ends="leaves"):
            self.dag.add_edge(upstream, self)
        return other

    def __rrshift__(self, other: Sequence[Task]) -> Task:  # [a, b] >> self
        self << other
        return self

    def __rlshift__(self, other: Sequence[Task]) -> Task:  # [a, b] << self
        self >> other
        return self


class Partial:
    """`task.partial(...)`: the shared parameters of a task about to be mapped."""

    def __init__(self, task: Task, kwargs: dict[str, Any]) -> None:
        self.task, self.kwargs = task, kwargs

    def expand(self, **mapped: Any) -> Output:
        task = self.task
        task._check_unbound("mapped")
        expansion = expansion_of(task, mapped, self.kwargs)
        whole = {
            name: v if isinstance(v, Output) else list(v) for name, v in expansion.kwargs.items()
        }
        bound = bind(task, (), {**self.kwargs, **whole})  # the values and the signature
        task.arguments, task.expansion = Arguments((), dict(self.kwargs)), expansion
        for output in bound.outputs():
            task.dag.add_edge(output.task, task)
        return Output(task)


def _as_tasks(other: object, *, ends: str) -> list[Task]:
    """The tasks `other` (a task, a group, or a list of them) links: a group's `roots` or
    `leaves`, as `ends` says (`groups`)."""
    items = other if isinstance(other, list | tuple) else [other]
    tasks: list[Task] = []
    for item in items:
        if isinstance(item, Output):
            tasks.append(item.task)
        elif isinstance(item, TaskGroup):
            tasks += item.roots() if ends == "roots" else item.leaves()
        elif isinstance(item, Task):
            tasks.append(item)
        else:
            raise DagDefinitionError(
                f"dependencies link tasks, got {item!r}; decorate the function with @dag.task"
            )
    return tasks
