"""Fixtures of the pipeline tests: the shipped example specs, the broken specs and a DAG bundle of both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import FAST, fresh_scenario_id

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
EXAMPLES = sorted((DAGS / "pipelines").glob("*.yaml"))
BROKEN = Path(__file__).with_name("broken_specs")
LOADER = DAGS / "altcraft_pipelines.py"
CHECKER = DAGS / "altcraft_pipelines_check.py"


def make_bundle(root: Path, specs: list[Path]) -> Path:
    """A DAG folder like the shipped one: loader and checker, and ``pipelines/`` holding ``specs``."""
    (root / "pipelines").mkdir(parents=True)
    for dag_file in (LOADER, CHECKER):
        shutil.copy(dag_file, root / dag_file.name)
    for spec in specs:
        shutil.copy(spec, root / "pipelines" / spec.name)
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Every example and every broken spec in one DAG folder."""
    return make_bundle(tmp_path / "bundle", [*EXAMPLES, *BROKEN.glob("*.yaml")])


@pytest.fixture
def altcraft_connection_extra() -> dict:
    """The emulator's default connection backs off instantly."""
    return FAST


@pytest.fixture
def scenario_id(emulator) -> int:
    sid = fresh_scenario_id()
    emulator.seed(
        scenarios=[{"id": sid, "name": f"Welcome {sid}", "db_id": 1, "is_active": True, "mode": "restart"}]
    )
    return sid
