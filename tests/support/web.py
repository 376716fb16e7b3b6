"""A real `backfill web` process for the tests of the pages and the API.

- `WebServers.start(env, token=...)`: `python -m backfill.cli web --port 0` with the
  test's environment (a `Stack.env()`, or any dict), in a session of its own; it
  returns once the server answers, with the port it printed. `.url`, and
  `.client(token=...)`: an httpx client on it (a bearer token if given).
- the `web_servers` fixture kills every server of the test at teardown and
  prints the tail of its log (shown when the test failed).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .processes import kill_group, spawn, tail
from .waiting import wait_until

START_TIMEOUT = 60.0  # seconds a server may take to answer on a loaded CI machine
_LISTENING = re.compile(r"backfill web: http://[^\s]+:(\d+)/")


@dataclass
class WebServer:
    process: object  # subprocess.Popen[bytes]
    log: Path
    port: int
    token: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client on this server; with `token`, every request carries it."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class WebServers:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.servers: list[WebServer] = []

    def start(
        self, env: dict[str, str], *, token: str | None = None, host: str = "127.0.0.1"
    ) -> WebServer:
        env = {k: v for k, v in env.items() if k != "BACKFILL_API_TOKEN"}
        if token is not None:
            env["BACKFILL_API_TOKEN"] = token
        log = self.logs / f"web-{len(self.servers)}.log"
        argv = [sys.executable, "-m", "backfill.cli", "web", "--host", host, "--port", "0"]
        process = spawn(argv, env, log)
        match = wait_until(
            lambda: _LISTENING.search(log.read_text(errors="replace")) if log.exists() else None,
            timeout=START_TIMEOUT,
            what="`backfill web` to print its address",
            explain=lambda: tail(log),
        )
        server = WebServer(process=process, log=log, port=int(match.group(1)), token=token)
        self.servers.append(server)
        wait_until(
            lambda: _answers(server),
            timeout=START_TIMEOUT,
            what="`backfill web` to answer",
            explain=lambda: tail(log),
        )
        return server

    def close(self) -> None:
        for server in self.servers:
            kill_group(server.process)  # type: ignore[arg-type]
            print(tail(server.log))


def _answers(server: WebServer) -> bool:
    try:
        return httpx.get(server.url + "/static/app.css", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def web_servers(tmp_path: Path) -> Iterator[WebServers]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    servers = WebServers(logs)
    try:
        yield servers
    finally:
        servers.close()
