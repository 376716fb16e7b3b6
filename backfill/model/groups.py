"""Task groups (`with dag.task_group("extract"):`), as Airflow's TaskGroup. Pure: no I/O.

Invariants:
- a task declared inside a group gets the group's id as a prefix, as Airflow
  does with `prefix_group_id=True` (its default): `extract.load`; a group
  inside a group is prefixed the same way (`etl.extract.load`). With
  `prefix_group_id=False` the ids stay as written;
- a group id is letters, digits, `_` and `-` (Airflow's group key: no `.`,
  which separates the levels), unique within its DAG;
- `group >> x` makes x depend on the group's LEAVES and `x >> group` makes
  the group's ROOTS depend on x, as Airflow does: its tasks with no upstream,
  or no downstream, inside the group (for a group of independent tasks, every
  one of them, as for a list). They are taken when the edge is made;
- a group's `default_args` override the DAG's for its tasks, and a task's own
  options override both;
- groups change ids and edges only: the DAG's fingerprint is that of its
  tasks, ids and options, whatever groups declared them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from backfill.model.errors import DagDefinitionError

if TYPE_CHECKING:
    from backfill.model.dag import DAG
    from backfill.model.task import Task

_GROUP_KEY = re.compile(r"[\w-]+")  # Airflow's group key: no "." (the level separator)
_Linked = TypeVar("_Linked")


class TaskGroup:
    """A named set of a DAG's tasks (and groups), declared with `with dag.task_group(id):`."""

    def __init__(
        self,
        dag: DAG,
        group_id: str,
        *,
        parent: TaskGroup | None,
        prefix_group_id: bool = True,
        tooltip: str = "",
        default_args: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(group_id, str) or not _GROUP_KEY.fullmatch(group_id):
            raise DagDefinitionError(
                f"DAG {dag.dag_id!r}: a task group id is letters, digits, '_' or '-' "
                f"(a '.' separates the levels), got {group_id!r}"
            )
        self.dag = dag
        self.parent = parent
        self.group_id = group_id if parent is None else parent.child_id(group_id)
        self.prefix_group_id = prefix_group_id
        self.tooltip = tooltip
        inherited: Mapping[str, Any] = {} if parent is None else parent.default_args
        self.default_args: dict[str, Any] = {**inherited, **(default_args or {})}
        self.task_ids: list[str] = []  # its own and its subgroups', in declaration order

    def __repr__(self) -> str:
        return f"<TaskGroup {self.dag.dag_id}.{self.group_id}: {len(self.task_ids)} tasks>"

    def child_id(self, local_id: str) -> str:
        """The id of a task or group declared inside this one."""
        return f"{self.group_id}.{local_id}" if self.prefix_group_id else local_id

    def __enter__(self) -> TaskGroup:
        self.dag.enter_group(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dag.leave_group(self)

    def tasks(self) -> list[Task]:
        return [self.dag.tasks[tid] for tid in self.task_ids]

    def roots(self) -> list[Task]:
        """Its tasks with no upstream inside the group."""
        inside = set(self.task_ids)
        return [t for t in self.tasks() if not t.upstream_ids & inside]

    def leaves(self) -> list[Task]:
        """Its tasks with no downstream inside the group."""
        inside = set(self.task_ids)
        return [t for t in self.tasks() if not t.downstream_ids & inside]

    def _require_tasks(self) -> None:
        if not self.task_ids:
            raise DagDefinitionError(
                f"task group {self.group_id!r} of DAG {self.dag.dag_id!r} has no tasks to link"
            )

    def __rshift__(self, other: _Linked) -> _Linked:  # group >> other: other after the leaves
        self._require_tasks()
        linked: Any = other  # a task, a group or a list of them: `Task` checks which
        for leaf in self.leaves():
            leaf >> linked
        return other

    def __lshift__(self, other: _Linked) -> _Linked:  # group << other: the roots after other
        self._require_tasks()
        linked: Any = other
        for root in self.roots():
            root << linked
        return other

    def __rrshift__(self, other: Sequence[Any]) -> TaskGroup:  # [a, b] >> group
        self << other
        return self

    def __rlshift__(self, other: Sequence[Any]) -> TaskGroup:  # [a, b] << group
        self >> other
        return self

    def describe(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "tooltip": self.tooltip, "task_ids": self.task_ids}
