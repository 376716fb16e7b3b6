"""The `backfill` command line: one module per command group.

Every command reads its settings from the environment
(`backfill.config.Settings.from_env`) when it runs, never at import time, and
reports bad input through `backfill.cli.output.BackfillGroup`: one line on
stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import click

from backfill.cli.control import cancel_command, pause_command
from backfill.cli.dags import dags_group
from backfill.cli.db import db_group
from backfill.cli.drive import resume_command
from backfill.cli.fleet import coordinator_command, worker_command
from backfill.cli.output import BackfillGroup
from backfill.cli.pools import pools_group
from backfill.cli.run import create_command, run_command
from backfill.cli.status import list_command, status_command, tasks_command


@click.group(cls=BackfillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def main() -> None:
    """Backfill: run a DAG for every logical date of a range on a Celery worker fleet."""


main.add_command(db_group)
main.add_command(dags_group)
main.add_command(run_command)
main.add_command(status_command)
main.add_command(list_command)
main.add_command(tasks_command)
main.add_command(pause_command)
main.add_command(cancel_command)
main.add_command(pools_group)
main.add_command(create_command)
main.add_command(resume_command)
main.add_command(coordinator_command)
main.add_command(worker_command)

__all__ = ["main"]
