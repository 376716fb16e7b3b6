"""Private, restartable PostgreSQL and Redis servers for the integration tests.

Some tests stop or restart the database or the broker in the middle of a run.
They must never do that to the shared servers (PostgreSQL on 5432, Redis on
6379), so they get a server of their own, on a free port, in a temporary
directory under /tmp:

- `PostgresServer`: a cluster made by Debian's `initdb` (trust auth, superuser
  `postgres`), driven by `pg_ctl`. As root (CI), every PostgreSQL binary runs
  as the `postgres` system user (`runuser`): initdb and postgres refuse root.
- `RedisServer`: `redis-server` as our own child process, persisting nothing:
  a restart loses every key, as a broker crash without persistence would.

Both keep their port across restarts (clients hold the URL). Only the first
start may move to another port, if the freshly picked one was taken in the
meantime. `destroy()` never raises, leaves no process and no directory.

Fixtures `postgres_server` and `redis_server`: a started server, destroyed
after the test even when it failed. Binaries missing: skipped on a laptop,
failed when the environment variable CI is set.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.processes import tail

from backfill.store.db import create_engine_for

START_TIMEOUT = 30  # seconds a server may take to start or stop on a loaded CI machine
SHUTDOWN_GRACE = 2  # seconds after SHUTDOWN before a redis-server still up gets SIGTERM
PORT_ATTEMPTS = 5  # first-start attempts, each on a freshly picked port
STOP_MODES = ("smart", "fast", "immediate")


class ServerUnavailable(RuntimeError):
    """The server's binaries, or the user to run them as, are missing."""


class _PortInUse(RuntimeError):
    """The server could not bind its port: another process took it."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (the server binds it a moment later: racy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _PrivateServer:
    """What both servers share: a temporary directory, a port, a log, the first start."""

    log: Path

    def __init__(self, prefix: str, port: int | None, also: tuple[str, ...]) -> None:
        self.addresses = ("127.0.0.1", *also)  # where it listens (`also`: e.g. netns.Network)
        # Under /tmp, not pytest's tmp_path: its parents are 0700, and as root the
        # server runs as `postgres`, which must traverse them. Short socket paths too.
        self.directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.directory.chmod(0o755)
        self.port = port or free_port()
        self._started_once = False

    def start(self) -> None:
        """Start the server and wait until it answers; nothing to do if it runs."""
        if self.is_running():
            return
        if self._started_once:
            self._launch()  # same port, even if taken: clients hold the URL
            return
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._launch()
            except _PortInUse:
                if attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()
            else:
                self._started_once = True
                return

    def is_running(self) -> bool:
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def _launch(self) -> None:
        """Start on `self.port` and wait until ready; `_PortInUse` if the port is taken."""
        raise NotImplementedError

    def _log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


# --- PostgreSQL ----------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory of `initdb` and `pg_ctl`: pg_config's, else the newest installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    # pg_config may come with libpq-dev alone, no server: try every installed major too.
    installed = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates += sorted(installed, key=lambda bin_: _version(bin_.parent.name), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ServerUnavailable(
        "PostgreSQL server binaries not found (no initdb in `pg_config --bindir` nor in "
        "/usr/lib/postgresql/*/bin); install the postgresql package"
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _postgres_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root (it refuses root), else None."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise ServerUnavailable("running as root, and no `runuser` to run PostgreSQL as postgres")
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            "running as root, and no `postgres` user to run PostgreSQL as"
        ) from None


class PostgresServer(_PrivateServer):
    """A private PostgreSQL cluster on 127.0.0.1 (and the `also` addresses, trusting their
    subnets); `port` is the first port to try."""

    def __init__(self, port: int | None = None, also: tuple[str, ...] = ()) -> None:
        self.bindir = postgres_bindir()
        user = _postgres_user()
        self._as_user = [] if user is None else ["runuser", "-u", "postgres", "--"]
        super().__init__("backfill-pg-", port, also)
        self.data_dir = self.directory / "data"
        self.log = self.directory / "postgres.log"
        try:
            if user is not None:
                os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C",
            )  # fmt: skip
            # No fsync: only an OS crash loses what the page cache holds, and tests crash
            # processes, not the machine. synchronous_commit stays on: off, a
            # stop("immediate") loses commits already acknowledged (even a CREATE TABLE),
            # which no real crash does; with fsync off, on costs nothing measurable.
            # (The port is given at each start.)
            settings = {
                "listen_addresses": ",".join(self.addresses),
                "unix_socket_directories": str(self.directory),
                "fsync": "off",
                "full_page_writes": "off",
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())
            if also:  # initdb trusts loopback only; `samenet`: the subnets of its addresses
                with (self.data_dir / "pg_hba.conf").open("a") as hba:
                    hba.write("host all all samenet trust\n")
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def url(self, database: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; its URL."""
        engine = create_engine_for(self.url()).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                quoted = conn.dialect.identifier_preparer.quote(name)
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        finally:
            engine.dispose()
        return self.url(name)

    def is_running(self) -> bool:
        return self.data_dir.exists() and self._pg_ctl("status").returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m mode`, waiting until the server is gone. "smart" waits for
        every client to disconnect (a pooled engine never does); "fast" ends them;
        "immediate" is a crash: no checkpoint, recovery at the next start."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {STOP_MODES}, not {mode!r}")
        if not self.is_running():
            return
        result = self._pg_ctl("stop", "-m", mode, "-w", "-t", str(START_TIMEOUT))
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop -m {mode} failed: {result.stderr}{self.log_tail()}")

    def restart_after(self, down_for: float, mode: str = "fast") -> None:
        """Stop, stay down for `down_for` seconds (the outage under test), start."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Stop (immediate) and remove the cluster; never raises."""
        try:
            self.stop("immediate")
        except Exception:
            # Last resort, by the postmaster's own pid: its children exit when it dies.
            with contextlib.suppress(Exception):
                pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _launch(self) -> None:
        offset = self._log_size()
        result = self._pg_ctl(
            "start", "-w", "-t", str(START_TIMEOUT), "-l", str(self.log), "-o", f"-p {self.port}"
        )
        if result.returncode == 0:
            return
        if "Address already in use" in self._log_since(offset):
            raise _PortInUse(f"port {self.port} is taken")
        raise RuntimeError(
            f"pg_ctl start on port {self.port} failed: {result.stderr}{self.log_tail()}"
        )

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", "-D", str(self.data_dir), *args, check=False)

    def _run(self, binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd: the postgres user may not be allowed into ours (e.g. a 0700 checkout).
        result = subprocess.run(
            [*self._as_user, str(self.bindir / binary), *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT + 30,  # pg_ctl -w gives up first; this is a backstop
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{binary} failed ({result.returncode}): {result.stderr}")
        return result


# --- Redis ---------------------------------------------------------------------------


class RedisServer(_PrivateServer):
    """A private redis-server on 127.0.0.1 (and the `also` addresses), our child process;
    `port` is the first to try."""

    def __init__(self, port: int | None = None, also: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable(
                "redis-server not found on PATH; install the redis-server package"
            )
        self.binary = binary
        super().__init__("backfill-redis-", port, also)
        self.log = self.directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, host: str) -> str:
        return f"redis://{host}:{self.port}/0"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def flush(self) -> None:
        """Delete every key (a test's broker starts empty)."""
        client = self._client()
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (SIGTERM if it does not answer); wait until the process is gone."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            client = self._client()
            try:
                # redis-py takes a refused SHUTDOWN (NOAUTH: a test set a password) for
                # one that closed the connection: the wait below tells them apart.
                client.shutdown(nosave=True)
            except redis.RedisError:
                pass
            finally:
                client.close()
            try:
                process.wait(timeout=SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                process.terminate()  # redis exits cleanly on SIGTERM, saving nothing here
                try:
                    process.wait(timeout=START_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._process = None

    def restart_after(self, down_for: float) -> None:
        """Stop, stay down for `down_for` seconds (the outage under test), start."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Stop and remove the directory; never raises."""
        process = self._process
        try:
            self.stop()
        except Exception:
            with contextlib.suppress(Exception):
                if process is not None:
                    process.kill()
                    process.wait(timeout=START_TIMEOUT)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _launch(self) -> None:
        offset = self._log_size()
        args = [
            self.binary, "--port", str(self.port), "--bind", *self.addresses,
            "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.directory), "--logfile", str(self.log),
        ]  # fmt: skip
        with self.log.open("ab") as out:  # errors before the logfile is open go to stderr
            process = subprocess.Popen(
                args, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,  # a terminal's Ctrl-C must not kill it behind our back
            )  # fmt: skip
        self._process = process
        # A short timeout: whoever else holds the port may accept and never answer.
        client = self._client(timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if process.poll() is not None:
                    self._process = None
                    if "Address already in use" in self._log_since(offset):
                        raise _PortInUse(f"port {self.port} is taken")
                    raise RuntimeError(
                        f"redis-server exited ({process.returncode}) on port {self.port}\n"
                        f"{self.log_tail()}"
                    )
                if self._answers(client, process.pid):
                    return
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    self._process = None
                    raise RuntimeError(
                        f"redis-server did not answer PING within {START_TIMEOUT}s\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    @staticmethod
    def _answers(client: redis.Redis, pid: int) -> bool:
        # Ours, not whoever holds the port: a server that lost the race for it still
        # runs for a moment, and the winner would answer PING in its place.
        try:
            return bool(client.ping()) and client.info("server")["process_id"] == pid
        except redis.RedisError:
            return False

    def _client(self, timeout: float = 5) -> redis.Redis:
        # No retries: redis-py's default (3, backing off from 1 s) would spend seconds
        # retrying a SHUTDOWN that worked, or a PING of a server not yet listening.
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=1,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )


class Startable(Protocol):
    """A private server a test starts and always destroys (these, `rabbit_node.RabbitNode`)."""

    def start(self) -> None: ...
    def destroy(self) -> None: ...
    def log_tail(self) -> str: ...


S = TypeVar("S", bound=Startable)


# --- fixtures ------------------------------------------------------------------------


def started(make: Callable[[], S], what: str) -> Iterator[S]:
    """A started private server made by `make`, destroyed afterwards (even after a failed
    test). Its binaries missing (`ServerUnavailable`): skipped on a laptop, failed in CI."""
    try:
        server = make()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}. CI is set: {what} tests must not be skipped", False)
        pytest.skip(str(exc))
    try:
        server.start()
        yield server
    finally:
        print(server.log_tail())  # shown by pytest when the test failed
        server.destroy()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A started private PostgreSQL cluster, destroyed after the test (even a failed one)."""
    yield from started(PostgresServer, "PostgreSQL")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started private Redis server, destroyed after the test (even a failed one)."""
    yield from started(RedisServer, "Redis")
