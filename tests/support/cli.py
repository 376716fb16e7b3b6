"""Running `backfill` commands in-process (click's CliRunner), as a user types them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result

from backfill.cli import main


def invoke(
    home: Path,
    *args: str,
    dags: Path | None = None,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    """`backfill ARGS` with BACKFILL_HOME `home`, the DAGs folder `dags` (None: as the
    environment says), the database `db_url` (None: the default under `home`) and any
    other variables of `env` (e.g. the terminal's size, COLUMNS and LINES)."""
    variables = {"BACKFILL_HOME": str(home), "BACKFILL_DATABASE_URL": db_url, "COLUMNS": "200"}
    variables.update(env or {})
    if dags is not None:
        variables["BACKFILL_DAGS_FOLDER"] = str(dags)
    return CliRunner().invoke(main, list(args), env=variables)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, one line `error: ...` naming the problem (every fragment) on stderr,
    nothing on stdout, no traceback: how every command refuses bad input."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
