"""``python -m altcraft.pipelines init``: the DAG files a user's DAG folder needs, the same as ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
