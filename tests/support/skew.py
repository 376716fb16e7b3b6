"""A process whose wall clock a test sets off, and can step while it runs.

`Skew.create(folder)` builds `skew.c` (beside this file) into an LD_PRELOAD
shim once per test session and returns a handle: `env()` for the process,
`set(seconds)` to move its wall clock (seen within 50 ms). Monotonic clocks,
sleeps and timed waits are untouched. Skipped where no C compiler is
installed, except in CI, where it fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("skew.c")


def _shim() -> Path:
    source = SOURCE.read_bytes()
    built = (
        Path(tempfile.gettempdir()) / f"backfill-skew-{hashlib.sha1(source).hexdigest()[:12]}.so"
    )
    if built.exists():
        return built
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        message = "no C compiler to build the clock-skew shim: apt-get install gcc"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set: the clock tests must not be skipped", False)
        pytest.skip(message)
    partial = built.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    partial.rename(built)
    return built


@dataclass(frozen=True)
class Skew:
    """The wall-clock offset of the processes started with `env()`."""

    shim: Path
    file: Path

    @classmethod
    def create(cls, folder: Path, seconds: float = 0.0) -> Skew:
        skew = cls(_shim(), folder / "clock-skew")
        skew.set(seconds)
        return skew

    def set(self, seconds: float) -> None:
        partial = self.file.with_suffix(".tmp")
        partial.write_text(f"{seconds}\n")
        partial.rename(self.file)

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(self.shim), "BACKFILL_SKEW_FILE": str(self.file)}
