"""`backfill.config.redact`: every URL a user may give, database or broker, printed
without its password and otherwise unchanged."""

from __future__ import annotations

import pytest

from backfill.config import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db:5432/backfill", "postgresql://u:***@db:5432/backfill"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:secret@127.0.0.1:5672/vh", "amqp://guest:***@127.0.0.1:5672/vh"),
        ("pyamqp://u:secret@h:5672//", "pyamqp://u:***@h:5672//"),  # kombu's vhost "/"
        ("amqp://u:secret@h/%2F", "amqp://u:***@h/%2F"),
        ("amqps://u:secret@h/v?ssl=1", "amqps://u:***@h/v?ssl=1"),
        ("amqp://u:se@cret@h/v", "amqp://u:***@h/v"),  # a password holding "@"
        # kombu's failover list: each URL masked (SQLAlchemy's parser raised on it)
        ("amqp://u:secret@h1;amqp://u:secret@h2:5673", "amqp://u:***@h1;amqp://u:***@h2:5673"),
    ],
)
def test_a_password_is_masked_and_nothing_else_changes(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    ["sqlite:////tmp/backfill.db", "filesystem://", "redis://h:6379/0", "amqp://u@h/v", "h:5672"],
)
def test_a_url_without_a_password_is_unchanged(url: str) -> None:
    assert redact(url) == url
