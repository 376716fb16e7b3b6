"""A private RabbitMQ node, for a test that needs a server setting changed.

The shared RabbitMQ (127.0.0.1:5672) is never reconfigured nor restarted: a
test that needs, say, a lower `consumer_timeout` starts a node of its own,
`rabbitmq-server` with its own name, AMQP and distribution ports, config
files, database and logs in a temporary directory under /tmp, and no plugin.
As root (CI) it runs as the `rabbitmq` system user (`runuser`), whose Erlang
cookie it shares with the shared node's tools. `destroy()` never raises and
leaves no process (the node's whole process group is killed) and no directory.

Fixture `rabbit_node` (in conftest): a factory of started nodes, each
destroyed after the test. Binaries missing: skipped on a laptop, failed in CI.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from kombu import Connection
from support.processes import tail

from .servers import START_TIMEOUT, ServerUnavailable, free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the script, not Debian's su wrapper
NODE_START_TIMEOUT = 90.0  # seconds: Erlang boots slowly on a loaded machine


class RabbitNode:
    """One private RabbitMQ node on 127.0.0.1; `conf`: lines of its rabbitmq.conf,
    `advanced`: the Erlang terms of its advanced.config (settings rabbitmq.conf lacks)."""

    def __init__(self, conf: dict[str, str], advanced: str = "[].") -> None:
        if not SERVER.exists():
            raise ServerUnavailable(f"{SERVER} not found; install the rabbitmq-server package")
        self._as_user = _as_rabbitmq()
        self.directory = Path(tempfile.mkdtemp(prefix="backfill-rabbit-", dir="/tmp"))
        self.directory.chmod(0o755)
        self.port, self.dist_port = free_port(), free_port()
        self.name = f"backfill-it-{os.urandom(4).hex()}@localhost"
        self.log = self.directory / "node.log"
        files = {
            "rabbitmq.conf": "".join(
                f"{k} = {v}\n"
                for k, v in {"listeners.tcp.default": f"127.0.0.1:{self.port}", **conf}.items()
            ),
            "advanced.config": advanced + "\n",
            "enabled_plugins": "[].\n",
            "env.conf": "",  # not /etc/rabbitmq/rabbitmq-env.conf: its NODENAME is the shared one's
        }
        for name, text in files.items():
            (self.directory / name).write_text(text)
        if self._as_user:
            user = pwd.getpwnam("rabbitmq")
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "") -> str:
        """The AMQP URL of `vhost` on this node ("": the default vhost `/`)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost or '/'}"

    def start(self) -> None:
        """Boot the node and wait until it takes an AMQP connection."""
        d = self.directory
        env = {
            "HOME": str(Path("~rabbitmq").expanduser()) if self._as_user else os.environ["HOME"],
            "PATH": os.environ["PATH"],
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
        }
        args = [*self._as_user, "env", *(f"{k}={v}" for k, v in env.items()), str(SERVER)]
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                args, cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,  # one group: the script, beam and its helpers
            )  # fmt: skip
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start\n{self.log_tail()}")
            time.sleep(0.2)

    def server_log(self) -> str:
        """Everything the node logged (its log files)."""
        return "".join(
            p.read_text(errors="replace") for p in (self.directory / "log").glob("*.log")
        )

    def log_tail(self) -> str:
        return tail(self.log)

    def kill(self) -> None:
        """SIGKILL the node's whole process group (a crash) and wait until it is gone.
        Its database stays: `start` again boots the same node on the same ports."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=START_TIMEOUT)
        self._process = None

    def restart_after(self, down_for: float) -> None:
        """Crash, stay down for `down_for` seconds (the outage under test), start."""
        self.kill()
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Kill the node's process group and remove its directory; never raises."""
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with Connection(self.url(), connect_timeout=1) as connection:
                connection.ensure_connection(max_retries=1)
        except Exception:  # not listening yet, or still booting
            return False
        return True


def _as_rabbitmq() -> list[str]:
    """The prefix that runs the node as `rabbitmq` when we are root, else nothing."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise ServerUnavailable("running as root, and no `runuser` to run RabbitMQ as rabbitmq")
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        raise ServerUnavailable("running as root, and no `rabbitmq` user to run it as") from None
    return ["runuser", "-u", "rabbitmq", "--"]
