"""The `backfill` command line: one module per command group.

Every command reads its settings from the environment
(`backfill.config.Settings.from_env`) when it runs, never at import time, and
reports bad input through `backfill.cli.output.BackfillGroup`: one line on
stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import click

from backfill.cli.output import BackfillGroup

# Command name -> "module:attribute", imported when the command runs: a read-only
# command (`status`, `tasks`, `list`) must not pay for Celery, the coordinator and
# Alembic at start-up (the whole CLI took ~0.7 s to import).
COMMANDS = {
    "db": "backfill.cli.db:db_group",
    "dags": "backfill.cli.dags:dags_group",
    "run": "backfill.cli.run:run_command",
    "status": "backfill.cli.status:status_command",
    "list": "backfill.cli.listing:list_command",
    "tasks": "backfill.cli.tasks:tasks_command",
    "watch": "backfill.cli.watch:watch_command",
    "logs": "backfill.cli.logs:logs_command",
    "clear": "backfill.cli.clear:clear_command",
    "pause": "backfill.cli.control:pause_command",
    "cancel": "backfill.cli.control:cancel_command",
    "pools": "backfill.cli.pools:pools_group",
    "create": "backfill.cli.run:create_command",
    "resume": "backfill.cli.resume:resume_command",
    "coordinator": "backfill.cli.fleet:coordinator_command",
    "worker": "backfill.cli.fleet:worker_command",
    "audit": "backfill.cli.audit:audit_command",
    "web": "backfill.web.command:web_command",  # its own layer, beside the CLI
}


@click.group(
    cls=BackfillGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="backfill")
def main() -> None:
    """Backfill: run a DAG for every logical date of a range on a Celery worker fleet."""


__all__ = ["main"]
