"""`backfill web` itself (`web/command.py`): where it listens, and what it says.

A port in use is bad input: exit 2, one line naming it, no traceback, before
anything is served. Listening beyond loopback without BACKFILL_API_TOKEN is
warned about on stderr (anyone who reaches the port can read every
backfill); with a token it is not, and the token is never printed. On an
embedded home with no database yet, reads answer "no backfills" without
creating it. No database server or broker is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from support.stack import PROJECT
from support.web import WebServers

TOKEN = "never-printed-token"
WARNING = "warning: listening on 0.0.0.0 without BACKFILL_API_TOKEN"


def embedded(home: Path) -> dict[str, str]:
    """The environment of a `backfill web` on the embedded defaults under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    return {**env, "BACKFILL_HOME": str(home), "BACKFILL_DAGS_FOLDER": str(home / "dags")}


def test_a_port_in_use_exits_2_naming_it(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "backfill.cli", "web", "--port", str(port)],
            env=embedded(home),
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: --port {port}: 127.0.0.1:{port} is already in use; pick a free port "
        "or stop the process listening on it"
    ]


def test_listening_beyond_loopback_without_a_token_is_warned_about(
    home: Path, web_servers: WebServers
) -> None:
    open_to_all = web_servers.start(embedded(home), host="0.0.0.0")
    assert WARNING in open_to_all.output()
    with open_to_all.client() as client:
        listed = client.get("/api/v1/backfills")
    assert (listed.status_code, listed.json()) == (200, [])
    assert not (home / "backfill.db").exists()  # a read never creates the database

    loopback = web_servers.start(embedded(home))
    with_token = web_servers.start(embedded(home), token=TOKEN, host="0.0.0.0")
    assert "warning" not in loopback.output()
    assert "read-only" in loopback.output()
    assert "warning" not in with_token.output()
    assert TOKEN not in with_token.output()
