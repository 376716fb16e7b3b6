"""`backfill dags ...`: list, show and check the DAG files of BACKFILL_DAGS_FOLDER.

Read-only: these commands import DAG files and never touch the database.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from backfill.cli.output import OutputFormat, console, emit_json, output_option, table, warn
from backfill.config import Settings
from backfill.model.dag import DAG
from backfill.model.discovery import DagBag, load_dags, summary
from backfill.model.task_options import TaskOptions

_DEFAULTS = TaskOptions()
LIST_SHOWN = 5  # elements of a literal list a mapped task maps over the table shows


@click.group("dags")
def dags_group() -> None:
    """The DAGs of BACKFILL_DAGS_FOLDER."""


def _load() -> DagBag:
    return load_dags(Settings.from_env().dags_folder)


def _file(bag: DagBag, path: Path) -> str:
    return str(path.relative_to(bag.folder))


@dags_group.command("list")
@output_option
def list_command(output: OutputFormat) -> None:
    """Every DAG: id, schedule, timezone, number of tasks and file."""
    bag = _load()
    for path, error in bag.errors.items():
        warn(f"{_file(bag, path)} failed to import: {summary(error)}")
    rows = [
        {
            "dag_id": dag.dag_id,
            "schedule": dag.schedule.describe(),
            "timezone": dag.timezone.name,
            "tasks": len(dag.tasks),
            "file": _file(bag, bag.files[dag.dag_id]),
        }
        for dag in sorted(bag.dags.values(), key=lambda d: d.dag_id)
    ]
    if output is OutputFormat.JSON:
        emit_json(rows)
        return
    tbl = table("dag_id", "schedule", "timezone", "tasks", "file")
    for row in rows:
        tbl.add_row(*(str(value) for value in row.values()))
    console().print(tbl)


@dags_group.command("show")
@click.argument("dag_id")
@output_option
def show_command(dag_id: str, output: OutputFormat) -> None:
    """Tasks in topological order, their upstreams and options, edges, schedule and limits."""
    bag = _load()
    dag = bag.get(dag_id)
    if output is OutputFormat.JSON:
        emit_json(dag.describe())
        return
    out = console()
    facts = table("", "", title=f"DAG {dag.dag_id}")
    facts.show_header = False
    for name, value in _facts(dag, _file(bag, bag.files[dag.dag_id])):
        facts.add_row(name, value)
    out.print(facts)
    mapping = any(task.expansion is not None for task in dag.tasks.values())
    columns = ("#", "task_id", "upstream", "options (non-default)")
    tasks = table(*columns, *(("maps over (expand)",) if mapping else ()), title="Tasks")
    for i, task_id in enumerate(dag.topological_order(), start=1):
        task = dag.tasks[task_id]
        upstream = ", ".join(sorted(task.upstream_ids)) or "-"
        row = [str(i), task_id, upstream, _non_default(task.options) or "-"]
        if mapping:
            row.append("-" if task.expansion is None else _expand(task.expansion.describe()))
        tasks.add_row(*row)
    out.print(tasks)
    if dag.groups:
        out.print(_groups_table(dag))
    out.print("Edges:" if dag.edges() else "Edges: none")
    for upstream, downstream in dag.edges():
        out.print(f"  {upstream} -> {downstream}")


def _expand(described: dict[str, Any]) -> str:
    """`x=result of numbers, y=[1, 2, 3]`: each mapped parameter and what it maps over (a
    literal list cut after `LIST_SHOWN` elements, saying how many it has)."""
    parts = []
    for name, over in described.items():
        if isinstance(over, dict):
            parts.append(f"{name}=result of {over['result_of']}")
            continue
        shown = ", ".join(json.dumps(v) for v in over[:LIST_SHOWN])
        more = f", ... ({len(over)} elements)" if len(over) > LIST_SHOWN else ""
        parts.append(f"{name}=[{shown}{more}]")
    return ", ".join(parts)


def _groups_table(dag: DAG) -> Table:
    """Each task group with its tasks, and the roots and leaves its edges link."""
    groups = table("group", "tasks", "roots (after `x >> group`)", "leaves", title="Task groups")
    for group in dag.groups.values():
        groups.add_row(
            group.group_id,
            ", ".join(group.task_ids) or "-",
            ", ".join(t.task_id for t in group.roots()) or "-",
            ", ".join(t.task_id for t in group.leaves()) or "-",
        )
    return groups


def _facts(dag: DAG, file: str) -> list[tuple[str, str]]:
    """The DAG's settings, then one `params.KEY` row per param (as JSON), if it has any."""
    return [
        ("description", dag.description or "-"),
        ("file", file),
        ("schedule", dag.schedule.describe()),
        ("timezone", dag.timezone.name),
        ("start_date", dag.start_date.isoformat()),
        ("max_active_runs", str(dag.max_active_runs)),
        ("max_active_tasks", str(dag.max_active_tasks)),
        ("tasks", str(len(dag.tasks))),
        *((f"params.{name}", json.dumps(value)) for name, value in dag.params.items()),
    ]


def _non_default(options: TaskOptions) -> str:
    """`name=value` for every option that differs from Airflow's default."""
    changed = [
        f"{f.name}={_show(getattr(options, f.name))}"
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(_DEFAULTS, f.name)
    ]
    return ", ".join(changed)


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


@dags_group.command("check")
@output_option
def check_command(output: OutputFormat) -> None:
    """Import every DAG file; list each broken one. Exit 1 if any is broken."""
    bag = _load()
    errors = [
        {"file": _file(bag, path), "error": summary(text), "detail": text}
        for path, text in bag.errors.items()
    ]
    if output is OutputFormat.JSON:
        emit_json({"dags": len(bag.dags), "files": len(bag.scanned), "errors": errors})
    elif errors:
        for error in errors:
            click.echo(f"{error['file']}: {error['error']}")
        click.echo(f"{len(errors)} of {len(bag.scanned)} DAG files failed to import")
    else:
        click.echo(f"OK: {len(bag.dags)} DAGs in {len(bag.scanned)} files, no errors")
    if errors:
        raise click.exceptions.Exit(1)
