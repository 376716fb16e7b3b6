"""The DAG model: tasks, their options and dependencies. Pure: no I/O.

Invariants, enforced when declared rather than when first used:
- DAG and task ids are Airflow-style keys (letters, digits, `_`, `.`, `-`;
  at most 250 characters, the width of the id columns) and task ids are
  unique within a DAG;
- every option is known and well-typed, whether given per task or in
  `default_args` (per-task values override `default_args`), callbacks included
  (`model.callbacks`);
- the dependency graph is acyclic: an edge that would close a cycle is
  refused with the cycle's path, and only tasks of the same DAG are linked;
- `start_date` is timezone-aware; its timezone is the DAG's timezone;
- `params` is a JSON object (string keys, JSON values), kept as its own JSON
  round trip: later changes to the dict the author passed do not reach it;
- `topological_order` is deterministic: ties are broken by declaration order;
- `fingerprint` depends on structure, options and params only: not on the
  description, the callables' code, or the order tasks were declared in. A DAG
  without params hashes as it did before params existed.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, overload
from zoneinfo import ZoneInfo

import pendulum
from pendulum.tz.timezone import FixedTimezone

from backfill.model.callbacks import Callback, check_callbacks
from backfill.model.errors import DagDefinitionError
from backfill.model.groups import TaskGroup
from backfill.model.params import check_params
from backfill.model.schedule import Schedule, parse_schedule
from backfill.model.task import Task, TaskCallable
from backfill.model.task_options import (
    MAX_ID_LENGTH,
    TaskOptions,
)
from backfill.model.taskflow import check_bound, takes_a_context

# Airflow's KEY_REGEX and ID_LEN; ids end up in run ids, log lines and String(250) columns.
_KEY = re.compile(r"[\w.-]+")


def _check_key(what: str, value: object, owner: str = "") -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value) or len(value) > MAX_ID_LENGTH:
        prefix = f"{owner}: " if owner else ""
        raise DagDefinitionError(
            f"{prefix}{what} must be 1 to {MAX_ID_LENGTH} letters, digits, '_', '.' or '-', "
            f"got {value!r}"
        )
    return value


class DAG:
    """A workflow: tasks, dependencies, a schedule and run limits."""

    def __init__(
        self,
        dag_id: str,
        *,
        schedule: str | timedelta,
        start_date: datetime,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        default_args: Mapping[str, Any] | None = None,
        description: str = "",
        params: Mapping[str, Any] | None = None,
        on_success_callback: Callback | Sequence[Callback] | None = None,
        on_failure_callback: Callback | Sequence[Callback] | None = None,
    ) -> None:
        self.dag_id = _check_key("dag_id", dag_id)
        owner = f"DAG {dag_id!r}"
        # A run's callbacks: the coordinator runs them once its outcome is recorded.
        self.on_success_callback = check_callbacks(
            owner, "on_success_callback", on_success_callback
        )
        self.on_failure_callback = check_callbacks(
            owner, "on_failure_callback", on_failure_callback
        )
        if not isinstance(start_date, datetime) or start_date.utcoffset() is None:
            raise DagDefinitionError(
                f"{owner}: start_date must be timezone-aware, "
                f"e.g. pendulum.datetime(2016, 1, 1, tz='UTC'), got {start_date!r}"
            )
        if not isinstance(start_date.tzinfo, ZoneInfo | FixedTimezone | timezone):
            # pendulum would turn a dateutil/pytz zone into a fixed offset, losing DST.
            raise DagDefinitionError(
                f"{owner}: start_date's timezone {start_date.tzinfo!r} is not supported; "
                "use pendulum or zoneinfo, e.g. pendulum.datetime(2016, 1, 1, tz='Europe/London')"
            )
        self.start_date = pendulum.instance(start_date)
        self.timezone = self.start_date.timezone or pendulum.UTC
        self.schedule: Schedule = parse_schedule(schedule, self.timezone, owner=owner)
        limits = {"max_active_runs": max_active_runs, "max_active_tasks": max_active_tasks}
        for name, value in limits.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DagDefinitionError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        self.default_args = dict(default_args or {})
        TaskOptions.build(f"{owner} default_args", self.default_args)
        self.description = description
        self.params = check_params(owner, params)
        self.tasks: dict[str, Task] = {}  # in declaration order
        self.groups: dict[str, TaskGroup] = {}  # in declaration order
        self._open_groups: list[TaskGroup] = []  # the `with dag.task_group(...)` blocks we are in

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id}: {len(self.tasks)} tasks>"

    @overload
    def task(self, fn: TaskCallable, /) -> Task: ...
    @overload
    def task(
        self, /, *, task_id: str | None = None, **options: Any
    ) -> Callable[[TaskCallable], Task]: ...
    def task(
        self, fn: TaskCallable | None = None, /, *, task_id: str | None = None, **options: Any
    ) -> Task | Callable[[TaskCallable], Task]:
        """Declare a task: `@dag.task` or `@dag.task(task_id=..., retries=2, ...)`."""
        if fn is not None and not callable(fn):
            raise DagDefinitionError(
                f"DAG {self.dag_id!r}: @dag.task decorates a function, got {fn!r}; "
                "to name the task use @dag.task(task_id=...)"
            )

        def declare(func: TaskCallable) -> Task:
            tid = getattr(func, "__name__", None) if task_id is None else task_id
            return self.add_task(tid, func, **options)  # type: ignore[arg-type]  # checked there

        return declare(fn) if fn is not None else declare

    def task_group(
        self,
        group_id: str,
        *,
        prefix_group_id: bool = True,
        tooltip: str = "",
        default_args: Mapping[str, Any] | None = None,
    ) -> TaskGroup:
        """A task group, for `with dag.task_group("extract"):` (`backfill.model.groups`)."""
        parent = self._open_groups[-1] if self._open_groups else None
        group = TaskGroup(
            self,
            group_id,
            parent=parent,
            prefix_group_id=prefix_group_id,
            tooltip=tooltip,
            default_args=default_args,
        )
        if group.group_id in self.groups:
            raise DagDefinitionError(
                f"DAG {self.dag_id!r}: duplicate task group id {group.group_id!r}"
            )
        TaskOptions.build(f"task group {group.group_id!r} default_args", group.default_args)
        self.groups[group.group_id] = group
        return group

    def enter_group(self, group: TaskGroup) -> None:
        self._open_groups.append(group)

    def leave_group(self, group: TaskGroup) -> None:
        assert self._open_groups[-1] is group, "`with` blocks close in the order they opened"
        self._open_groups.pop()

    def add_task(self, task_id: str, fn: TaskCallable, **options: Any) -> Task:
        """Declare task `task_id` running `fn(ctx)`; `options` override `default_args` (the
        group's, then the DAG's). Inside a task group, the id is prefixed with the group's."""
        group = self._open_groups[-1] if self._open_groups else None
        if group is not None:
            _check_key("task_id", task_id, owner=f"DAG {self.dag_id!r}")
            task_id = group.child_id(task_id)
        _check_key("task_id", task_id, owner=f"DAG {self.dag_id!r}")
        if task_id in self.tasks:
            raise DagDefinitionError(
                f"DAG {self.dag_id!r}: duplicate task id {task_id!r}; task ids must be unique"
            )
        owner = f"task {task_id!r} of DAG {self.dag_id!r}"
        _check_callable(owner, fn)
        defaults = (
            self.default_args if group is None else {**self.default_args, **group.default_args}
        )
        task = Task(self, task_id, fn, TaskOptions.build(owner, {**defaults, **options}))
        self.tasks[task_id] = task
        for enclosing in self._open_groups:
            enclosing.task_ids.append(task_id)
        return task

    def add_edge(self, upstream: Task, downstream: Task) -> None:
        """Make `downstream` depend on `upstream`; refuse an edge that closes a cycle."""
        for task in (upstream, downstream):
            if self.tasks.get(task.task_id) is not task:
                raise DagDefinitionError(
                    f"cannot link task {task.task_id!r} of DAG {task.dag.dag_id!r} with a task "
                    f"of DAG {self.dag_id!r}: dependencies only link tasks of the same DAG"
                )
        path = self._path(downstream.task_id, upstream.task_id)
        if path is not None:
            cycle = " -> ".join([*path, downstream.task_id])
            raise DagDefinitionError(
                f"DAG {self.dag_id!r} would have a cycle: {cycle}; "
                f"remove the dependency {upstream.task_id} >> {downstream.task_id}"
            )
        upstream.downstream_ids.add(downstream.task_id)
        downstream.upstream_ids.add(upstream.task_id)

    def _path(self, src: str, dst: str) -> list[str] | None:
        """A path src -> ... -> dst along existing edges, or None (deterministic)."""
        stack: list[list[str]] = [[src]]
        seen = {src}
        while stack:
            path = stack.pop()
            if path[-1] == dst:
                return path
            for nxt in sorted(self.tasks[path[-1]].downstream_ids, reverse=True):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append([*path, nxt])
        return None

    def topological_order(self) -> tuple[str, ...]:
        """Task ids, upstreams first; among ready tasks the earliest declared goes first."""
        ids = list(self.tasks)
        position = {tid: i for i, tid in enumerate(ids)}
        indegree = {tid: len(t.upstream_ids) for tid, t in self.tasks.items()}
        ready = [position[tid] for tid, n in indegree.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            tid = ids[heapq.heappop(ready)]
            order.append(tid)
            for nxt in self.tasks[tid].downstream_ids:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, position[nxt])
        return tuple(order)  # complete: add_edge never lets a cycle in

    def edges(self) -> list[tuple[str, str]]:
        """Every (upstream, downstream) pair, in topological order of both ends."""
        rank = {tid: i for i, tid in enumerate(self.topological_order())}
        pairs = [(up, t.task_id) for t in self.tasks.values() for up in t.upstream_ids]
        return sorted(pairs, key=lambda e: (rank[e[0]], rank[e[1]]))

    def describe(self) -> dict[str, Any]:
        """Structure and options as JSON-ready data (what `dags show` prints)."""
        return {
            "dag_id": self.dag_id,
            "description": self.description,
            "schedule": self.schedule.describe(),
            "timezone": self.timezone.name,
            "start_date": self.start_date.isoformat(),
            "max_active_runs": self.max_active_runs,
            "max_active_tasks": self.max_active_tasks,
            # Only when there are some: a DAG without params keeps its fingerprint.
            **({"params": self.params} if self.params else {}),
            "tasks": [self._task_json(tid) for tid in self.topological_order()],
            "edges": [list(e) for e in self.edges()],
            "groups": [group.describe() for group in self.groups.values()],
        }

    def _task_json(self, task_id: str) -> dict[str, Any]:
        task = self.tasks[task_id]
        described = {
            "task_id": task_id,
            "upstream": sorted(task.upstream_ids),
            "downstream": sorted(task.downstream_ids),
            "options": task.options.as_json(),
        }
        if task.arguments is not None:  # only then: a DAG without TaskFlow keeps its hash
            described["arguments"] = task.arguments.describe()
        if task.expansion is not None:  # likewise: a DAG without mapping keeps its hash
            described["expand"] = task.expansion.describe()
        return described

    def check_bound(self) -> None:
        """Refuse a task whose parameters after the Context nothing passes (TaskFlow);
        called once the DAG file has declared everything (`discovery`)."""
        for task in self.tasks.values():
            mapped = () if task.expansion is None else tuple(task.expansion.kwargs)
            check_bound(task, task.arguments, mapped)

    @property
    def fingerprint(self) -> str:
        """A stable hash of structure, options and params: differs iff one of them does.

        Reordering declarations changes no dependency, so tasks are hashed by id.
        """
        shape = self.describe()
        # Edges are implied by the tasks' upstreams; groups change ids and edges only.
        del shape["description"], shape["edges"], shape["groups"]
        shape["tasks"].sort(key=lambda t: t["task_id"])
        blob = json.dumps(shape, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_callable(owner: str, fn: object) -> None:
    if not callable(fn):
        raise DagDefinitionError(f"{owner}: expected a function, got {fn!r}")
    if not takes_a_context(fn):
        raise DagDefinitionError(
            f"{owner}: the function must take the task's Context as its first argument"
        )
