"""`Client`: backfills from Python, as the command line makes and drives them.

    from backfill import Client

    with Client() as client:                        # BACKFILL_* from the environment
        plan = client.plan("etl", "2024-01-01", "2024-01-31", task_regex="^load")
        backfill_id = client.create("etl", "2024-01-01", "2024-01-31")
        client.status(backfill_id)["state"]

Invariants:
- every method validates what it is given with the CLI's own code (this
  package's modules) and raises a `UserError` naming what is wrong before
  anything is written; an outage is `Unreachable`, as for the CLI (exit 3);
- every answer is the JSON shape of the matching `backfill ... -o json`
  (DESIGN section 4), as plain dicts and lists, built by the same functions;
- options are the flags of `backfill run` / `create` by their Python names
  (`task_regex=`, `continue_on_failures=True`, `conf={...}`);
- one engine for the client's life, opened on first use (`Database`); reads
  never create the embedded database, the first write does. `close()` (or
  the `with` block) disposes of it. A client may be shared by threads.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pendulum

from backfill.client import clear as clearing
from backfill.client import control
from backfill.client.create import planned
from backfill.client.database import Database
from backfill.client.errors import LocalWorkersError
from backfill.client.listing import listing
from backfill.client.local_workers import LocalWorkers, dag_queues
from backfill.client.logs import find_ti, logs_json, pick_try
from backfill.client.options import SWITCHES, options_from_flags
from backfill.client.shapes import cleared_json, plan_json, task_json_text
from backfill.client.story import outcome_json, read_story, status_json
from backfill.client.tasks import page_rows, tasks_query
from backfill.client.ti import shown_map_index, ti_json
from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.create import create_backfill
from backfill.errors import UserError
from backfill.model.dag import DAG
from backfill.model.states import BackfillState
from backfill.planning.backfill_plan import BackfillPlan
from backfill.planning.results import Progress
from backfill.planning.run_options import RunOptions
from backfill.store import status
from backfill.store.errors import BackfillNotFound

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

OPTIONS = frozenset({"reprocess", "conf", "max_active_runs", "task_regex", "pool", *SWITCHES})
TASKS_PAGE = 100  # TIs `tasks` gives unless `limit` says otherwise, as the CLI


class Client:
    def __init__(
        self,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        dags_folder: str | Path | None = None,
        home: str | Path | None = None,
        who: str = "client",
        settings: Settings | None = None,
    ) -> None:
        """What is not given comes from the environment (DESIGN section 4), as for the CLI;
        the embedded database and broker are under `home`, as `BACKFILL_HOME` says. `who`
        names the writer in the journals (`who:host:pid`; the CLI's is `cli`). `settings`,
        if given, are used as they are (`backfill web` passes its own)."""
        given = {
            "BACKFILL_HOME": home,
            "BACKFILL_DATABASE_URL": database_url,
            "BACKFILL_BROKER_URL": broker_url,
            "BACKFILL_DAGS_FOLDER": dags_folder,
        }
        env = {**os.environ, **{k: str(v) for k, v in given.items() if v is not None}}
        self.settings = settings or Settings.from_env(env)
        self.database = Database(self.settings)  # shared: the web reads its grid through it
        self._actor = f"{who}:{socket.gethostname()}:{os.getpid()}"  # the journals' who

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- reads -----------------------------------------------------------------------

    def backfills(
        self, *, state: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Every backfill, newest first (`backfill list -o json`)."""
        wanted = _backfill_state(state)
        with self.database.reading() as conn:
            return [] if conn is None else listing(conn, wanted, limit=limit, offset=offset)

    def status(self, backfill_id: int) -> dict[str, Any]:
        """One backfill's progress and story (`backfill status ID -o json`)."""
        with self.database.reading_about(backfill_id) as conn:
            found = status.summary(conn, backfill_id)
            if found is None:
                raise BackfillNotFound(backfill_id)
            return status_json(found, read_story(conn, found, now=pendulum.now("UTC")))

    def tasks(
        self, backfill_id: int, *, limit: int | None = TASKS_PAGE, **filters: Any
    ) -> list[dict[str, Any]]:
        """The backfill's TIs by date then task (`backfill tasks ID -o json`): at most
        `limit` (None: every one), filtered as `iter_tasks` says, which streams them."""
        return list(self.iter_tasks(backfill_id, limit=limit, **filters))

    def iter_tasks(
        self,
        backfill_id: int,
        *,
        states: Sequence[str] = (),
        task_regex: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """`tasks`, streamed in one snapshot: constant memory at any size."""
        query = tasks_query(
            backfill_id,
            states=states,
            task_regex=task_regex,
            start=start,
            end=end,
            limit=limit or None,
            offset=offset,
        )
        with self.database.reading_about(backfill_id) as conn:
            if not status.exists(conn, backfill_id):
                raise BackfillNotFound(backfill_id)
            for row in page_rows(conn, query):
                yield json.loads(task_json_text(row))

    def task_instance(
        self, backfill_id: int, task_id: str, date: str, *, map_index: int | None = None
    ) -> dict[str, Any]:
        """One TI, as a `tasks` row, with its tries (who claimed each, when, how it ended)
        and, for a mapped task's TI, its siblings' states. A mapped task needs `map_index`."""
        with self.database.reading_about(backfill_id) as conn:
            return ti_json(conn, backfill_id, task_id, date, map_index=map_index)

    def shown_map_index(self, backfill_id: int, task_id: str, date: str) -> int | None:
        """A mapped task's TI that its grid cell shows on `date` (its most telling one);
        None when the task is not mapped there."""
        with self.database.reading_about(backfill_id) as conn:
            return shown_map_index(conn, backfill_id, task_id, date)

    def logs(
        self,
        backfill_id: int,
        task_id: str,
        *,
        date: str | None = None,
        map_index: int | None = None,
        try_number: int | None = None,
    ) -> dict[str, Any]:
        """One try's log (`backfill logs ID TASK_ID [-d DATE] [-m N] [--try N] -o json`)."""
        with self.database.reading_about(backfill_id) as conn:
            target = find_ti(conn, backfill_id, task_id, date, map_index=map_index)
            number = pick_try(target, try_number, follow=False)
            return logs_json(conn, backfill_id, target, number)

    # --- making and driving backfills ---------------------------------------------------

    def plan(self, dag_id: str, start: str, end: str, **options: Any) -> dict[str, Any]:
        """What `create` would do, writing nothing (`create --dry-run -o json`)."""
        dag, plan = self._planned(dag_id, start, end, options)
        return plan_json(plan, dag)

    def create(self, dag_id: str, start: str, end: str, **options: Any) -> int:
        """A new backfill for a `backfill coordinator` to drive; its id (`backfill create`)."""
        dag, plan = self._planned(dag_id, start, end, options)
        return create_backfill(self._writer(), dag, plan, now=pendulum.now("UTC"))

    def run(
        self,
        dag_id: str,
        start: str,
        end: str,
        *,
        local_workers: int | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        stop: threading.Event | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Create a backfill and drive it to its end here (`backfill run -o json`).

        `local_workers`: Celery workers started for the span of the drive (default: 2 on
        the embedded broker, else 0: the fleet's workers run the TIs). `on_progress`
        gets `{"id", "state", "runs", "task_instances", "waiting"}` about once a second.
        Setting `stop` ends the drive after its pass; the backfill stays resumable
        (`backfill resume ID`) and the answer's `state` is still `running`."""
        dag, plan = self._planned(dag_id, start, end, options)
        engine = self._writer()
        backfill_id = create_backfill(engine, dag, plan, now=pendulum.now("UTC"))
        count = local_workers
        if count is None:
            count = 2 if self.settings.embedded_broker else 0
        coordinator = Coordinator(engine, self.settings, dag)
        try:
            with LocalWorkers(self.settings, count, queues=dag_queues(dag)) as workers:
                report = None if on_progress is None else _progress_to(on_progress)
                outcome = coordinator.drive(backfill_id, on_progress=report, stop=stop)
                if workers.count and len(workers.exited()) == workers.count:
                    raise LocalWorkersError(f"every local worker has exited: {workers.log_folder}")
            final = coordinator.progress(backfill_id)
        finally:
            coordinator.close()
        return outcome_json(backfill_id, dag.dag_id, outcome, final)

    # --- operating a backfill -----------------------------------------------------------

    def pause(self, backfill_id: int) -> dict[str, Any]:
        """Stop dispatching (`backfill pause ID`)."""
        with self.database.writing_about(backfill_id) as conn:
            return control.pause(conn, backfill_id)

    def resume(self, backfill_id: int) -> dict[str, Any]:
        """Dispatch again: a `backfill coordinator` drives it (`backfill resume ID` also
        drives it in the foreground; this never does)."""
        with self.database.writing_about(backfill_id) as conn:
            return control.unpause(conn, backfill_id)

    def cancel(self, backfill_id: int, *, abort: bool = False) -> dict[str, Any]:
        """Cancel for good: drain, or with `abort` stop running tries (`backfill cancel`)."""
        with self.database.writing_about(backfill_id) as conn:
            done = control.cancel(conn, backfill_id, abort=abort, actor=self._actor)
        if abort:
            done["revoke_warning"] = control.revoke(self.settings, backfill_id)
        return done

    def clear(
        self,
        backfill_id: int,
        *,
        task_regex: str | None = None,
        states: Sequence[str] = (),
        start: str | None = None,
        end: str | None = None,
        map_indexes: Sequence[int] = (),
        downstream: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Make the matching TIs run again (`backfill clear ID --yes -o json`), with the
        reason they will not run, if they will not (`warning`)."""
        engine = self.database.engine_about(backfill_id)
        dag, options = clearing.backfill_dag(engine, self.settings, backfill_id)
        asked = clearing.selection(
            dag,
            task_regex=task_regex,
            states=states,
            start=start,
            end=end,
            map_indexes=map_indexes,
            downstream=downstream,
        )
        found = clearing.targets(engine, backfill_id, dag, asked)
        if dry_run:
            return cleared_json(backfill_id, found, None)
        cleared = clearing.clear(engine, backfill_id, dag, found, actor=self._actor)
        warning = clearing.stalled_warning(engine, backfill_id, options)
        return {**cleared_json(backfill_id, found, cleared), "warning": warning}

    # --- the parts ----------------------------------------------------------------------

    def _planned(
        self, dag_id: str, start: str, end: str, options: dict[str, Any]
    ) -> tuple[DAG, BackfillPlan]:
        return planned(self.settings, dag_id, start, end, _run_options(options))

    def _writer(self) -> Engine:
        engine = self.database.engine(create=True)
        assert engine is not None  # create=True always gives one
        return engine


def _run_options(given: dict[str, Any]) -> RunOptions:
    unknown = sorted(set(given) - OPTIONS)
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; the options: {', '.join(sorted(OPTIONS))}")
    flags = dict(given)
    conf = flags.pop("conf", None)
    if conf is not None and not isinstance(conf, str):
        conf = json.dumps(conf)  # parsed back by the CLI's own check (size, object)
    for name in SWITCHES:
        if not isinstance(flags.get(name, False), bool):
            raise UserError(f"{name} is a flag: True or False, got {flags[name]!r}")
    return options_from_flags(conf=conf, **flags)


def _backfill_state(state: str | None) -> BackfillState | None:
    if state is None:
        return None
    try:
        return BackfillState(state)
    except ValueError:
        choices = ", ".join(s.value for s in BackfillState)
        raise UserError(f"state {state!r} is not one of {choices}") from None


def _progress_to(callback: Callable[[dict[str, Any]], None]) -> Callable[[Progress], None]:
    def report(progress: Progress) -> None:
        callback(
            {
                "id": progress.backfill_id,
                "state": progress.state.value,
                "runs": dict(progress.runs),
                "task_instances": dict(progress.task_instances),
                "waiting": dict(progress.waiting),
            }
        )

    return report
