"""A RabbitMQ vhost of a test's own, on the shared server: never reconfigured, never restarted.

A vhost is made for one test (`rabbitmqctl add_vhost`, guest given every
permission on it) and deleted after it, with every queue, exchange and
message in it: tests share the server, never a vhost. RabbitMQ not answering
skips the test on a laptop and fails it when CI is set.

Queues are read and purged over AMQP (kombu), as a broker client would:
`queue_length` and `purge` take a queue name, as `PrivateRedis`'s do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from backfill.config import redact

RABBIT_URL = os.environ.get("BACKFILL_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672").rstrip(
    "/"
)
RABBIT_USER = "guest"  # the user of RABBIT_URL, given every permission on each vhost
CTL_TIMEOUT = 60.0  # seconds a rabbitmqctl call may take on a loaded machine


@dataclass(frozen=True)
class PrivateVhost:
    """One RabbitMQ vhost owned by a test."""

    name: str

    @property
    def url(self) -> str:
        return f"{RABBIT_URL}/{self.name}"

    def queue_length(self, queue: str) -> int:
        """Messages ready in `queue` (0 if it was never declared)."""
        with Connection(self.url) as connection, connection.channel() as channel:
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            except NotFound:
                return 0

    def purge(self, queue: str) -> None:
        """Delete every ready message of `queue`, as an operator's purge would."""
        with Connection(self.url) as connection, connection.channel() as channel:
            channel.queue_purge(queue)


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl ARGS` (quietly); its output, or the test fails naming it."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}", False)
    return done.stdout


@contextmanager
def private_vhost(who: str) -> Iterator[PrivateVhost]:
    """An empty vhost of `who`'s own (a test's node id), deleted after, with all in it."""
    _require_rabbitmq()
    vhost = PrivateVhost(f"backfill-it-{os.getpid()}-{os.urandom(4).hex()}")
    rabbitmqctl("add_vhost", vhost.name, "--description", who[:200])
    try:
        rabbitmqctl("set_permissions", "-p", vhost.name, RABBIT_USER, ".*", ".*", ".*")
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost.name)


def _require_rabbitmq() -> None:
    problem = None
    if shutil.which("rabbitmqctl") is None:
        problem = "rabbitmqctl is not installed"
    else:
        try:
            with Connection(f"{RABBIT_URL}/", connect_timeout=5) as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as exc:  # any refusal: the server is not usable for tests
            problem = f"RabbitMQ at {redact(RABBIT_URL)} does not answer ({exc})"
    if problem is None:
        return
    message = f"{problem}; start RabbitMQ or point BACKFILL_TEST_RABBIT_URL at one"
    if os.environ.get("CI"):
        pytest.fail(f"{message}. CI is set: RabbitMQ tests must not be skipped", False)
    pytest.skip(message)
