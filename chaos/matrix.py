"""Rows of the fault matrix and how one runs: its own stage, measured, always cleaned up.

A row is a function of a `Stage` that starts real processes on scenes of the
stage (`Stage.scene`: a database, a broker, workers, coordinators), strikes its
fault mid-run, waits for the backfill's final state (at most the deadline) and
returns a `Trial`: the backfill and the fault's own evidence. `run_row` then
reads the promises back from the evidence (`chaos.evidence`) and gives every
process, namespace, server and database back, whatever happened.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .evidence import Trial, broken, tally
from .report import Result
from .scene import Scene, Template, open_scene
from .settings import SMALL, TIMEOUTS, Size


@dataclass(frozen=True)
class Row:
    key: str  # for --only
    fault: str  # the table's first column
    run: Callable[[Stage], Trial]
    once: bool = False  # seen once per backfill: a small DAG will do


class Stage:
    """What a row may open: scenes and its own servers, all closed after the row."""

    def __init__(
        self, key: str, size: Size, template: Template, folder: Path, exits: ExitStack
    ) -> None:
        self.key, self.size, self.template, self.folder = key, size, template, folder
        self.exits = exits

    def scene(self, *, broker: str | None = None, db_url: str | None = None) -> Scene:
        """A scene of this row (see `open_scene`), given back when the row ends."""
        opened = open_scene(
            self.key, self.size, self.template, self.folder, broker=broker, db_url=db_url
        )
        scene, _ = self.exits.enter_context(opened)
        scene.stack = scene.stack.with_timeouts(**TIMEOUTS)
        return scene


def run_row(row: Row, size: Size, template: Template, folder: Path) -> Result:
    """Run `row` at `size` (small if it is seen once) and judge it from the evidence."""
    size = SMALL if row.once else size
    try:
        with ExitStack() as exits:
            trial = row.run(Stage(row.key, size, template, folder, exits))
            counted = tally(trial)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a row's own failure (pytest.fail in a helper too)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        (folder / f"{row.key}.error").write_text(traceback.format_exc())
        return Result(row.key, row.fault, None, error=detail or type(exc).__name__)
    return Result(
        row.key,
        row.fault,
        counted,
        problems=broken(counted, trial.checks),
        checks=trial.checks,
        note=trial.note,
    )
