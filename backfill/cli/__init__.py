"""The `backfill` command line: one module per command group.

Every command reads its settings from the environment
(`backfill.config.Settings.from_env`) when it runs, never at import time, and
reports bad input through `backfill.cli.output.BackfillGroup`: one line on
stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import click

from backfill.cli.dags import dags_group
from backfill.cli.db import db_group
from backfill.cli.output import BackfillGroup
from backfill.cli.run import run_command


@click.group(cls=BackfillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def main() -> None:
    """Backfill: run a DAG for every logical date of a range on a Celery worker fleet."""


main.add_command(db_group)
main.add_command(dags_group)
main.add_command(run_command)

__all__ = ["main"]
