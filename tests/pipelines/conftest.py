"""Fixtures of the pipeline tests: the shipped example specs, the broken specs and a DAG bundle of both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
def emulator(altcraft_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT",
        altcraft_emulator.connection_json(backoff_initial=0, backoff_max=0.01, max_retries=2, timeout=5),
    )
    return altcraft_emulator


@pytest.fixture
def scenario_id(emulator) -> int:
    import uuid

    sid = 100_000 + uuid.uuid4().int % 800_000
    emulator.seed(
        scenarios=[{"id": sid, "name": f"Welcome {sid}", "db_id": 1, "is_active": True, "mode": "restart"}]
    )
    return sid
