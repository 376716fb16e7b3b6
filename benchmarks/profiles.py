"""Profiles of the slowest scenario: where its coordinator and a worker spend their time.

Invariants:
- the profiled run is an extra run of the scenario with the lowest ratio to
  raw Celery, on the shape it was measured on, after the measured ones: a
  profiler slows what it watches, so no figure comes from a profiled run;
- with py-spy (on PATH or beside the interpreter), the `backfill run`
  process and one worker pool process are sampled (`coordinator.svg`,
  `worker.svg`: flame graphs; `--format speedscope` is another option of
  py-spy); without it, the command runs under cProfile
  (`benchmarks.counted`, BENCH_PROFILE: `coordinator.prof`) and the worker is
  not profiled. Either way the report says which files were written.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import phases
from benchmarks.fleet import Shape, workers
from benchmarks.phases import Stage
from benchmarks.shapes import ENGINE_SCENARIOS, Sizes

ATTACH_AFTER = 0.5  # seconds: let the interpreter start before py-spy looks at it


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def slowest(
    stage: Stage, series: list[dict[str, Any]], sizes: Sizes, folder: Path
) -> dict[str, Any]:
    """Profile the scenario of (a)-(c) with the lowest ratio; what was written."""
    measured = [
        (s[key]["ratio"], key, s["shape"]) for s in series for key in ENGINE_SCENARIOS if key in s
    ]
    if not measured:
        return {}
    ratio, key, shape_name = min(measured)
    shape = next(s for s in _shapes(series) if s.name == shape_name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = _profile(stage, shape, key, sizes, folder)
    return {"scenario": key, "shape": shape_name, "ratio": ratio, "files": written}


def _shapes(series: list[dict[str, Any]]) -> list[Shape]:
    return [Shape(*map(int, s["shape"].split("x"))) for s in series]


def _profile(stage: Stage, shape: Shape, key: str, sizes: Sizes, folder: Path) -> list[str]:
    spy = py_spy()
    start, end = stage.calendar.take(ENGINE_SCENARIOS[key], sizes.dates[key])
    dates = ("-s", start.isoformat(), "-e", end.isoformat())
    argv = ("backfill", "run", ENGINE_SCENARIOS[key], *dates, "--output", "json")
    logs = stage.settings.home / "logs"
    with workers(stage.settings, shape, redis_url=stage.redis_url, logs=logs) as running_workers:
        phases.warm_up(stage, shape.processes)
        if spy is None:
            stage.commands.profile_next = folder / "coordinator.prof"
        running = stage.commands.start(f"profile-{shape.name}-{key}", *argv)
        samplers = []
        if spy is not None:
            time.sleep(ATTACH_AFTER)
            targets = {"coordinator": running.pid, "worker": running_workers.pool_pids()[0]}
            samplers = [_record(spy, pid, folder / f"{name}.svg") for name, pid in targets.items()]
        ran = running.wait(phases.DRIVE_TIMEOUT)
        for sampler in samplers:  # the worker's outlives the run: stop it, it writes on SIGINT
            if sampler.poll() is None:
                sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
    if ran.exit_code != 0:
        raise phases.BenchError(f"the profiled run: {ran.describe()}")
    return sorted(str(p) for p in folder.iterdir())


def _record(spy: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    command = [spy, "record", "--pid", str(pid), "--output", str(out), "--rate", "200"]
    with out.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
