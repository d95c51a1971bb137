"""End-to-end fixtures: fresh PostgreSQL databases, an emulator, and a real Airflow run as subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from demo.airflow_env import LocalAirflow, free_port

from altcraft.pipelines.dag_folder import init
from altcraft.testing import EmulatorClient

PG_SERVER = "postgres@127.0.0.1:5432"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests here time out by SIGALRM, not by the thread method the rest of the suite uses (there
    ``dag.test()`` has SIGALRM for its own timeouts): that one ends the whole session with ``os._exit``,
    so no fixture stops the Airflow components it started, and they keep running into the next jobs."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            marker = item.get_closest_marker("timeout")
            seconds = marker.args[0] if marker and marker.args else item.config.getini("timeout")
            item.add_marker(pytest.mark.timeout(float(seconds), method="signal"), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test using the ``local_airflow`` fixture shows the end of every component's log."""
    report = yield
    airflow = getattr(item, "funcargs", {}).get("local_airflow")
    if report.failed and isinstance(airflow, LocalAirflow):
        report.sections.append(("Airflow component logs", airflow.stack.logs()))
        report.sections.append(("Airflow task errors", task_errors(airflow.home)))
    return report


def task_errors(home: Path, lines: int = 40) -> str:
    """The end of each task log that recorded an error."""
    found = []
    for path in sorted((home / "logs").glob("dag_id=*/**/*.log")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if '"level":"error"' in text:
            found.append(f"===== {path.relative_to(home)} =====\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(found) or "(no task log recorded an error)"


@pytest.fixture(scope="module")
def pg_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases on the local PostgreSQL: Airflow's metadata and the CRM (with the ledger)."""
    prefix = f"altcraft_e2e_{uuid.uuid4().hex[:10]}"
    names = {"metadata": prefix, "crm": f"{prefix}_crm"}
    _admin("CREATE DATABASE {}", names.values())
    try:
        yield {role: f"{PG_SERVER}/{name}" for role, name in names.items()}
    finally:
        _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", names.values())


def _admin(statement: str, databases: Any) -> None:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            for name in databases:
                cursor.execute(statement.format(name))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def e2e_emulator(altcraft_module_emulator: EmulatorClient) -> EmulatorClient:
    """The module's own emulator (``altcraft_module_emulator`` of altcraft.testing) under a short name."""
    return altcraft_module_emulator


def make_dags_folder(root: Path, specs: dict[str, dict[str, Any]]) -> Path:
    """A DAG folder as ``python -m altcraft.pipelines init`` makes it, holding these specs (by file stem)."""
    init(root)
    for name, spec in specs.items():
        (root / "pipelines" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def start_airflow(
    home: Path,
    dags_folder: Path,
    sql_alchemy_conn: str,
    env: dict[str, str],
    dag_ids: list[str],
    start_timeout: float = 180,
) -> LocalAirflow:
    """A migrated, running Airflow with the DAGs parsed; RuntimeError with the component logs if not."""
    airflow = LocalAirflow(
        home=home,
        sql_alchemy_conn=sql_alchemy_conn,
        dags_folder=dags_folder,
        api_port=free_port(),
        extra_env=env,
    )
    try:
        airflow.migrate()
        airflow.start(timeout=start_timeout)
        airflow.wait_for_dags(*dag_ids)
    except Exception as error:
        logs = airflow.stack.logs()
        airflow.stack.stop()
        raise RuntimeError(f"Airflow did not start: {error}\n{logs}") from error
    return airflow
