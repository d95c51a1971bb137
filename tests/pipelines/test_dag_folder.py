"""``python -m altcraft.pipelines init``: the DAG files a user's DAG folder needs, the same as ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from altcraft.pipelines.dag_folder import DAG_FILES, init, main
from tests.pipelines.conftest import CHECKER, DAGS, LOADER


def test_the_repository_dag_folder_holds_exactly_the_files_init_writes():
    assert sorted(DAG_FILES) == sorted(path.name for path in DAGS.glob("*.py")) == [LOADER.name, CHECKER.name]
    for name, text in DAG_FILES.items():
        assert (DAGS / name).read_text(encoding="utf-8") == text, name


def test_init_writes_the_dag_files_and_the_specs_folder_once(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "altcraft.pipelines", "init", str(tmp_path / "dags")],
        capture_output=True,
        text=True,
        check=True,
    )

    assert sorted(p.name for p in (tmp_path / "dags").iterdir()) == sorted([*DAG_FILES, "pipelines"])
    assert f"wrote {tmp_path / 'dags' / LOADER.name}" in done.stdout
    assert init(tmp_path / "dags") == []  # again: nothing to do


def test_init_never_overwrites_a_different_file(tmp_path: Path, capsys):
    """In this process: ``python -m altcraft.pipelines`` exits with what `main` returns (the test above
    runs the module), and a second interpreter importing Airflow costs seconds of a slow machine."""
    (tmp_path / LOADER.name).write_text("# mine\n")

    assert main(["init", str(tmp_path)]) == 1
    assert f"{tmp_path / LOADER.name} exists and differs" in capsys.readouterr().err
    assert (tmp_path / LOADER.name).read_text() == "# mine\n"


def test_init_of_an_empty_folder_name_writes_nothing(tmp_path: Path, capsys, monkeypatch):
    """``DAGS="$(airflow config get-value core dags_folder)"`` is empty when that command fails (no
    ``airflow`` on the PATH, another virtualenv): ``init ""`` wrote the DAG files into the current folder,
    which Airflow never reads, and said it had."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SystemExit) as usage_error:
        main(["init", ""])

    assert usage_error.value.code == 2
    assert "argument dags_folder: empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_init_into_a_path_that_is_no_folder_says_so(tmp_path: Path, capsys):
    """A file in the folder's place (a typo'd path) ended ``init`` in a NotADirectoryError traceback."""
    (tmp_path / "dags").write_text("not a folder\n")

    assert main(["init", str(tmp_path / "dags")]) == 1
    err = capsys.readouterr().err
    assert f"cannot write the DAG files into {tmp_path / 'dags'}" in err
    assert "Traceback" not in err
