"""What a bench run ran on: versions, CPUs, and the code measured (git HEAD, local edits).

Figures are only comparable with the code they were measured on: the git
HEAD and whether the product's files (backfill/, workers/) differed from it
are recorded with every run. Git is only read here (`rev-parse`, `status`).
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import celery
import redis
import sqlalchemy as sa

from backfill.store.db import create_engine_for
from benchmarks import stack


def describe(client: redis.Redis) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "celery": celery.__version__,
        "redis": client.info("server").get("redis_version", "?"),
        "postgresql": _postgres_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        **_git(),
    }


def summary(env: dict[str, Any]) -> str:
    edits = "product files edited" if env.get("product_changes") else "clean product files"
    return (
        f"PostgreSQL {env['postgresql']} + Redis {env['redis']}, celery {env['celery']}, "
        f"Python {env['python']}, {env['cpus']} CPUs (load {env['load_average'][0]:.1f} at start); "
        f"git {env.get('git_head', '?')[:10]} ({edits})"
    )


def _postgres_version() -> str:
    engine = create_engine_for(stack.PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    if not head:
        return {}
    changed = git("status", "--porcelain", "--", "backfill", "workers").splitlines()
    return {"git_head": head, "product_changes": changed}
