"""A Redis DB index of a test's own: the one protocol every test that needs Redis uses.

An index (15 down to 1: DB 0 is what everything else uses by default) is taken
by setting an owner mark on an empty DB (SET NX, expiring after an hour in case
a run dies), and given back emptied. A DB is only ever emptied key by key,
never with FLUSHALL, and only while it still holds our mark. Redis not
answering skips the test on a laptop and fails it when CI is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

REDIS_URL = os.environ.get("BACKFILL_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
OWNER_KEY = "backfill-it:owner"  # marks a Redis DB index as taken


@dataclass
class PrivateRedis:
    """One Redis DB index owned by a test (or a test module)."""

    index: int
    client: redis.Redis
    token: str

    @property
    def url(self) -> str:
        return f"{REDIS_URL}/{self.index}"

    def owned(self) -> bool:
        return bool(self.client.get(OWNER_KEY) == self.token.encode())

    def clear(self) -> None:
        """Delete every key of this DB but the owner mark (the DB is ours alone)."""
        if not self.owned():
            pytest.fail(f"Redis DB {self.index} lost its owner mark: another run is using it")
        for key in self.client.scan_iter(count=500):
            if key != OWNER_KEY.encode():
                self.client.delete(key)

    def queue_keys(self, queue: str) -> list[str]:
        # kombu's Redis transport keeps a list per priority step; priority 0 is the bare name.
        return [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]

    def queue_length(self, queue: str) -> int:
        return sum(int(self.client.llen(k)) for k in self.queue_keys(queue))

    def purge(self, queue: str) -> None:
        """Delete every message waiting in `queue`, as an operator's purge would."""
        self.client.delete(*self.queue_keys(queue))


@contextmanager
def private_redis(who: str) -> Iterator[PrivateRedis]:
    """An empty Redis DB index of `who`'s own (e.g. "the parity tests"), emptied and
    given back after."""
    try:
        redis.Redis.from_url(f"{REDIS_URL}/0").ping()
    except redis.RedisError as exc:
        message = f"Redis at {REDIS_URL} does not answer ({exc}); start it"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set: Redis tests must not be skipped", False)
        pytest.skip(message)
    private = _take()
    if private is None:
        pytest.fail(f"no empty Redis DB index (1-15) is free for {who}", False)
    try:
        yield private
    finally:
        if private.owned():
            private.clear()
            private.client.delete(OWNER_KEY)
        private.client.close()


def _take() -> PrivateRedis | None:
    token = os.urandom(16).hex()
    for index in range(15, 0, -1):  # high indexes first: DB 0 is everyone's default
        client = redis.Redis.from_url(f"{REDIS_URL}/{index}")
        if client.dbsize() == 0 and client.set(OWNER_KEY, token, nx=True, ex=3600):
            return PrivateRedis(index, client, token)
        client.close()
    return None
