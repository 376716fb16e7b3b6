"""Configuration from the environment (DESIGN section 4); CLI flags override.

With nothing set, everything is embedded under `BACKFILL_HOME`: a SQLite
database and kombu's `filesystem://` broker, so no server is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from backfill.errors import ConfigError

LOG_MAX_BYTES = 1024 * 1024
RESULT_MAX_BYTES = 64 * 1024  # of a try's return value, as JSON
MAX_MAP_LENGTH = 1024  # TIs one mapped task makes in a run: Airflow's [core] max_map_length
MIN_LOG_BYTES = 1024  # room for a traceback's last lines


@dataclass(frozen=True, kw_only=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    dags_folder: Path
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 60.0
    queued_timeout: float = 120.0
    log_max_bytes: int = LOG_MAX_BYTES  # of each try's log kept (its tail)
    result_max_bytes: int = RESULT_MAX_BYTES  # a larger return value fails its try
    max_map_length: int = MAX_MAP_LENGTH  # more elements fail a mapped task's placeholder
    # Signs task messages; a worker holding it refuses unsigned ones (`backfill.signing`).
    message_key: str | None = field(default=None, repr=False)
    # Guards `backfill web`: every request needs it, and no write is taken without it.
    api_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("BACKFILL_HOME") or ".backfill").absolute()
        settings = cls(
            home=home,
            database_url=env.get("BACKFILL_DATABASE_URL") or f"sqlite:///{home / 'backfill.db'}",
            broker_url=env.get("BACKFILL_BROKER_URL") or "filesystem://",
            dags_folder=Path(env.get("BACKFILL_DAGS_FOLDER") or "dags").absolute(),
            heartbeat_interval=_seconds(env, "BACKFILL_HEARTBEAT_INTERVAL", 5.0),
            heartbeat_timeout=_seconds(env, "BACKFILL_HEARTBEAT_TIMEOUT", 60.0),
            queued_timeout=_seconds(env, "BACKFILL_QUEUED_TIMEOUT", 120.0),
            log_max_bytes=_bytes(env, "BACKFILL_LOG_MAX_BYTES", LOG_MAX_BYTES),
            result_max_bytes=_bytes(env, "BACKFILL_RESULT_MAX_BYTES", RESULT_MAX_BYTES),
            max_map_length=_count(env, "BACKFILL_MAX_MAP_LENGTH", MAX_MAP_LENGTH),
            message_key=env.get("BACKFILL_MESSAGE_KEY") or None,
            api_token=env.get("BACKFILL_API_TOKEN") or None,
        )
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        _check_url(settings.database_url)
        if settings.heartbeat_interval >= settings.heartbeat_timeout:
            raise ConfigError(
                "BACKFILL_HEARTBEAT_INTERVAL must be smaller than BACKFILL_HEARTBEAT_TIMEOUT "
                f"(got {settings.heartbeat_interval:g}s and {settings.heartbeat_timeout:g}s)"
            )
        return settings

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        """Where the embedded `filesystem://` transport keeps its messages."""
        return self.home / "broker"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    return _whole(env, name, default, least=MIN_LOG_BYTES, unit=" of bytes")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    return _whole(env, name, default, least=1)


def _whole(env: Mapping[str, str], name: str, default: int, *, least: int, unit: str = "") -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number{unit}, got {raw!r}") from None
    if value < least:
        raise ConfigError(f"{name} must be at least {least}, got {raw!r}")
    return value


def _check_url(url: str) -> None:
    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"BACKFILL_DATABASE_URL is not a database URL: {redact(url)!r}; "
            "expected e.g. postgresql://user@host/db or sqlite:///path/backfill.db"
        ) from None


def redact(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log.

    Any URL: a database's, or a broker's, including kombu's failover lists
    (`amqp://u:p@h1;amqp://u:p@h2`) and vhosts spelled `%2F` or `//`. Only the
    password changes; a URL that cannot be parsed is masked, never printed
    whole (parsing it as SQLAlchemy does would reject a port-less broker list).
    """
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The userinfo ends at the LAST "@" before any query: a password may hold "@".
    location, query_sep, query = rest.partition("?")
    userinfo, at, host = location.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return url
    return f"{scheme}://{user}:***@{host}{query_sep}{query}"
