"""Find the DAGs of the DAGs folder (DESIGN section 4, "DAG files").

Invariants:
- every `*.py` directly in the folder is imported, in sorted order, except
  names starting with `_` or `.` (helpers, editor droppings);
- the folder is importable, as Airflow's DAGS_FOLDER is: it is appended to
  `sys.path` (after everything installed, so a helper cannot shadow a library),
  so a DAG file imports a helper module beside it (`import _common`) by name,
  once per process, however many DAG files share it;
- each file becomes its own uniquely named module, so two files with the same
  stem in different folders, or a reload, never collide in `sys.modules`;
- a file is all or nothing: either every module-level `DAG` it defines is
  registered, or none is and the file has an entry in `errors`. One broken
  file never hides the DAGs of another;
- a `dag_id` already registered by an earlier file is an error of the later file.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType, TracebackType

from backfill.errors import ConfigError
from backfill.model.dag import DAG
from backfill.model.errors import DagDefinitionError, DagNotFound

_MAX_IDS_SHOWN = 10


@dataclass(frozen=True)
class DagBag:
    """What one scan of the DAGs folder found. Immutable."""

    folder: Path
    dags: Mapping[str, DAG]
    files: Mapping[str, Path]  # dag_id -> the file that defines it
    errors: Mapping[Path, str]  # file -> one summary line, then the traceback
    scanned: tuple[Path, ...]  # every file that was imported, broken or not

    def get(self, dag_id: str) -> DAG:
        """The DAG `dag_id`, or `DagNotFound` naming the folder and the ids it has."""
        try:
            return self.dags[dag_id]
        except KeyError:
            raise DagNotFound(self._not_found_message(dag_id)) from None

    def _not_found_message(self, dag_id: str) -> str:
        sentences = [f"DAG {dag_id!r} not found in {self.folder} (BACKFILL_DAGS_FOLDER)."]
        known = sorted(self.dags)
        close = difflib.get_close_matches(dag_id, known, n=1)
        if close:
            sentences.append(f"Did you mean {close[0]!r}?")
        if known:
            more = len(known) - _MAX_IDS_SHOWN
            tail = f" and {more} more" if more > 0 else ""
            sentences.append(f"Known DAGs: {', '.join(known[:_MAX_IDS_SHOWN])}{tail}.")
        else:
            sentences.append("The folder defines no DAG.")
        if self.errors:
            # The DAG may live in a file that failed to import: say so.
            sentences.append(
                f"{len(self.errors)} file(s) failed to import: see `backfill dags check`."
            )
        return " ".join(sentences)


def summary(error_text: str) -> str:
    """The one-line summary of an entry of `DagBag.errors`."""
    return error_text.split("\n", 1)[0]


def load_dags(folder: Path) -> DagBag:
    """Import every DAG file of `folder` and register its module-level DAGs by id."""
    if not folder.is_dir():
        problem = "does not exist" if not folder.exists() else "is not a folder"
        raise ConfigError(
            f"the DAGs folder {folder} {problem}; set BACKFILL_DAGS_FOLDER to the folder "
            "holding your DAG files"
        )
    _importable(folder)
    paths = tuple(
        p for p in sorted(folder.glob("*.py")) if p.is_file() and not p.name.startswith(("_", "."))
    )
    dags: dict[str, DAG] = {}
    files: dict[str, Path] = {}
    errors: dict[Path, str] = {}
    for path in paths:
        try:
            found = _dags_of(_import(path), path)
            _check_unique(found, files, path)
        except (Exception, SystemExit) as exc:  # user code: any failure is that file's error
            errors[path] = _describe(exc, path)
            continue
        for dag_id, dag in found.items():
            dags[dag_id] = dag
            files[dag_id] = path
    return DagBag(
        folder=folder,
        dags=MappingProxyType(dags),
        files=MappingProxyType(files),
        errors=MappingProxyType(errors),
        scanned=paths,
    )


def _importable(folder: Path) -> None:
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.append(entry)


def _module_name(path: Path) -> str:
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:10]
    return f"backfill_dag_{stem}_{digest}"


def _import(path: Path) -> ModuleType:
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path.name}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as a normal import does: dataclasses and
    # pickling inside a DAG file look their module up in sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _dags_of(module: ModuleType, path: Path) -> dict[str, DAG]:
    found: dict[str, DAG] = {}
    for value in vars(module).values():
        if not isinstance(value, DAG):
            continue
        value.check_bound()
        other = found.get(value.dag_id)
        if other is not None and other is not value:
            raise DagDefinitionError(
                f"{path.name} defines two different DAGs with dag_id {value.dag_id!r}"
            )
        found[value.dag_id] = value
    return found


def _check_unique(found: Mapping[str, DAG], files: Mapping[str, Path], path: Path) -> None:
    for dag_id in found:
        if dag_id in files:
            raise DagDefinitionError(
                f"dag_id {dag_id!r} is already defined in {files[dag_id].name}; "
                "every DAG needs its own dag_id"
            )


def _describe(exc: BaseException, path: Path) -> str:
    """One summary line, then the traceback from the DAG file's own frames."""
    message = " ".join(str(exc).split()) or "(no message)"
    head = f"{type(exc).__name__}: {message}"
    tb = _user_frames(exc.__traceback__, path)
    return f"{head}\n{''.join(traceback.format_exception(type(exc), exc, tb)).rstrip()}"


def _user_frames(tb: TracebackType | None, path: Path) -> TracebackType | None:
    """Skip the importlib machinery: start at the first frame of the DAG file itself.

    None when the file has no frame (a SyntaxError, a duplicate id): the
    exception alone then says where, without importlib's frames.
    """
    while tb is not None and tb.tb_frame.f_code.co_filename != str(path):
        tb = tb.tb_next
    return tb
