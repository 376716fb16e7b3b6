"""DAG discovery: one broken file never hides the others, and every problem is named."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from backfill.errors import ConfigError
from backfill.model.discovery import load_dags, summary
from backfill.model.errors import DagNotFound

REPO_DAGS = Path(__file__).parents[2] / "dags"
TEST_DAGS = Path(__file__).parents[1] / "dags"


def dag_file(dag_id: str, *, var: str = "dag", extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        import pendulum
        from backfill import DAG

        {var} = DAG({dag_id!r}, schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))

        @{var}.task
        def only(ctx):
            pass
        """
    ) + textwrap.dedent(extra)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def broken_folder(tmp_path: Path) -> dict[str, Path]:
    """Two good files around three broken ones, each broken differently."""
    return {
        "a_good": write(tmp_path, "a_good.py", dag_file("good_a")),
        "b_syntax": write(tmp_path, "b_syntax.py", "def broken(:\n    pass\n"),
        "c_cycle": write(tmp_path, "c_cycle.py", dag_file("cyclic", extra="only >> only\n")),
        "d_raises": write(tmp_path, "d_raises.py", "raise RuntimeError('boom at import')\n"),
        "e_exits": write(tmp_path, "e_exits.py", "import sys\nsys.exit(3)\n"),
        "z_good": write(tmp_path, "z_good.py", dag_file("good_z")),
    }


def test_the_repo_dags_load() -> None:
    bag = load_dags(REPO_DAGS)
    assert bag.errors == {}
    dag = bag.get("example_bash_operator")
    assert len(dag.tasks) == 6
    assert bag.files["example_bash_operator"] == REPO_DAGS / "example_bash_operator.py"


def test_a_file_may_define_several_dags() -> None:
    bag = load_dags(TEST_DAGS)
    assert bag.errors == {}
    assert sorted(bag.dags) == ["every_minute", "linear", "paris_hourly"]
    assert bag.files["paris_hourly"] == bag.files["every_minute"] == TEST_DAGS / "paris.py"
    assert bag.scanned == (TEST_DAGS / "linear.py", TEST_DAGS / "paris.py")


def test_broken_files_do_not_hide_good_ones(broken_folder: dict[str, Path]) -> None:
    bag = load_dags(broken_folder["a_good"].parent)
    assert sorted(bag.dags) == ["good_a", "good_z"]
    assert set(bag.errors) == {
        broken_folder[name] for name in ("b_syntax", "c_cycle", "d_raises", "e_exits")
    }
    assert len(bag.scanned) == 6


@pytest.mark.parametrize(
    ("name", "first_line", "in_traceback"),
    [
        ("b_syntax", "SyntaxError: ", "def broken(:"),
        ("c_cycle", "DagDefinitionError: DAG 'cyclic' ", "only >> only"),
        ("d_raises", "RuntimeError: boom at import", "raise RuntimeError"),
        ("e_exits", "SystemExit: 3", "sys.exit(3)"),
    ],
)
def test_each_error_is_one_line_then_the_traceback(
    broken_folder: dict[str, Path], name: str, first_line: str, in_traceback: str
) -> None:
    text = load_dags(broken_folder[name].parent).errors[broken_folder[name]]
    head, _, rest = text.partition("\n")
    assert summary(text) == head
    assert head.startswith(first_line)
    assert in_traceback in rest
    # The traceback starts in the DAG file, not in importlib's machinery.
    assert "importlib" not in rest
    assert str(broken_folder[name]) in rest


def test_a_definition_error_names_the_problem(broken_folder: dict[str, Path]) -> None:
    text = load_dags(broken_folder["c_cycle"].parent).errors[broken_folder["c_cycle"]]
    assert "cycle" in summary(text)
    assert "only -> only" in summary(text)


def test_a_failed_file_leaves_no_module_behind(tmp_path: Path) -> None:
    import sys

    write(tmp_path, "bad.py", "raise ValueError('x')\n")
    before = set(sys.modules)
    load_dags(tmp_path)
    assert set(sys.modules) == before


def test_duplicate_dag_id_is_an_error_of_the_second_file(tmp_path: Path) -> None:
    first = write(tmp_path, "first.py", dag_file("shared"))
    second = write(tmp_path, "second.py", dag_file("shared") + dag_file("other", var="o"))
    bag = load_dags(tmp_path)
    assert bag.files == {"shared": first}
    # All or nothing: the second file's other DAG is not registered either.
    assert "other" not in bag.dags
    assert summary(bag.errors[second]) == (
        "DagDefinitionError: dag_id 'shared' is already defined in first.py; "
        "every DAG needs its own dag_id"
    )


def test_two_dags_with_one_id_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, "twice.py", dag_file("same") + dag_file("same", var="again"))
    bag = load_dags(tmp_path)
    assert bag.dags == {}
    assert "two different DAGs with dag_id 'same'" in summary(bag.errors[path])


def test_one_dag_bound_to_two_names_is_one_dag(tmp_path: Path) -> None:
    write(tmp_path, "alias.py", dag_file("aliased", extra="alias = dag\n"))
    bag = load_dags(tmp_path)
    assert list(bag.dags) == ["aliased"]
    assert bag.errors == {}


def test_private_hidden_and_nested_files_are_not_imported(tmp_path: Path) -> None:
    write(tmp_path, "_helpers.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, ".hidden.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, "notes.txt", "not python")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "nested.py", dag_file("nested"))
    write(tmp_path, "real.py", dag_file("real"))
    bag = load_dags(tmp_path)
    assert list(bag.dags) == ["real"]
    assert bag.errors == {}
    assert bag.scanned == (tmp_path / "real.py",)


def test_same_file_name_in_two_folders_does_not_collide(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", "dag.py", dag_file("from_one"))
    write(tmp_path / "two", "dag.py", dag_file("from_two"))
    one, two = load_dags(tmp_path / "one"), load_dags(tmp_path / "two")
    assert list(one.dags) == ["from_one"]
    assert list(two.dags) == ["from_two"]
    assert (
        one.get("from_one").tasks["only"].fn.__module__
        != two.get("from_two").tasks["only"].fn.__module__
    )


def test_a_dag_file_may_use_dataclasses(tmp_path: Path) -> None:
    # dataclasses resolves the defining module through sys.modules while it runs.
    extra = """
    from dataclasses import dataclass

    @dataclass
    class Row:
        n: int
    """
    write(tmp_path, "dc.py", "from __future__ import annotations\n" + dag_file("dc", extra=extra))
    assert load_dags(tmp_path).errors == {}


def test_missing_folder_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; set BACKFILL_DAGS_FOLDER"):
        load_dags(tmp_path / "nope")
    write(tmp_path, "file.py", "")
    with pytest.raises(ConfigError, match=r"is not a folder; set BACKFILL_DAGS_FOLDER"):
        load_dags(tmp_path / "file.py")


def test_unknown_dag_names_id_folder_known_ids_and_a_hint(
    broken_folder: dict[str, Path],
) -> None:
    folder = broken_folder["a_good"].parent
    with pytest.raises(DagNotFound) as info:
        load_dags(folder).get("goood_a")
    message = str(info.value)
    assert message.startswith(f"DAG 'goood_a' not found in {folder} (BACKFILL_DAGS_FOLDER).")
    assert "Did you mean 'good_a'?" in message
    assert "Known DAGs: good_a, good_z." in message
    assert "4 file(s) failed to import: see `backfill dags check`." in message
    assert "\n" not in message


def test_unknown_dag_in_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DagNotFound, match=r"The folder defines no DAG\.$"):
        load_dags(tmp_path).get("x")


def test_many_known_ids_are_abbreviated(tmp_path: Path) -> None:
    for i in range(12):
        write(tmp_path, f"d{i:02}.py", dag_file(f"dag_{i:02}"))
    with pytest.raises(DagNotFound, match=r"dag_09 and 2 more\.$"):
        load_dags(tmp_path).get("zzz")


def test_the_bag_is_read_only() -> None:
    bag = load_dags(TEST_DAGS)
    with pytest.raises(TypeError):
        bag.dags["x"] = bag.get("linear")  # type: ignore[index]
    with pytest.raises(AttributeError):
        bag.folder = Path()  # type: ignore[misc]


def test_a_dag_file_imports_a_helper_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is importable (Airflow's DAGS_FOLDER is on sys.path, after what is
    installed): DAG files import a helper module beside them by its name."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored after the test
    folder = tmp_path / "dags_with_helper"
    folder.mkdir()
    helper = write(folder, "_helper_for_discovery.py", "RETRIES = 4\n")
    for name in ("one", "two"):
        body = f"import _helper_for_discovery as helper\n{dag_file(name)}n = helper.RETRIES\n"
        write(folder, f"{name}.py", body)
    try:
        bag = load_dags(folder)
        assert dict(bag.errors) == {}
        assert sorted(bag.dags) == ["one", "two"]
        assert sys.modules["_helper_for_discovery"].__file__ == str(helper.resolve())
        assert sys.path[-1] == str(folder.resolve())
    finally:
        sys.modules.pop("_helper_for_discovery", None)
