"""`backfill web [--host H] [--port P]`: serve the pages, the JSON API and `/metrics`.

Invariants:
- the address is bound before anything is served or read: a port in use, or
  a host that cannot be listened on, exits 2 naming them;
- it binds 127.0.0.1 by default: exposing it to the network is a choice, and
  doing so without `BACKFILL_API_TOKEN` is warned about (anyone who reaches
  the port can read every backfill; writes stay refused without a token);
- the token itself is never printed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import click
import uvicorn

from backfill.config import Settings
from backfill.errors import UserError
from backfill.web.app import make_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@click.command("web")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: any free port, printed).",
)
def web_command(host: str, port: int) -> None:
    """The web page and HTTP API: backfills, their grids, TIs and logs; JSON under /api/v1.

    With BACKFILL_API_TOKEN set, every request needs it (a bearer token, or the
    login form's session) and writes are allowed; without it the server is
    read-only. Prometheus metrics are served at /metrics."""
    settings = Settings.from_env()
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if settings.api_token is None:
        if not _loopback(host):
            click.echo(
                f"warning: listening on {host} without BACKFILL_API_TOKEN: anyone who reaches "
                "this port can read every backfill (writes stay refused); set a token",
                err=True,
            )
        click.echo("no BACKFILL_API_TOKEN: read-only (pause, cancel, clear refused)", err=True)
    click.echo(f"backfill web: http://{shown}:{bound}/ (API: /api/v1, metrics: /metrics)", err=True)
    config = uvicorn.Config(make_app(settings), log_level="info", access_log=True)
    uvicorn.Server(config).run(sockets=[sock])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it is reachable from elsewhere
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # socket.gaierror too: an unknown host name
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port}: {host}:{port} is already in use; pick a free port "
                "or stop the process listening on it"
            ) from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
