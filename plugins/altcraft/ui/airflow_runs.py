"""What the pages need from Airflow itself: DAG runs and tags (metadata database, read in the API server)
and paths.

Only the API server imports this module: it is where plugin FastAPI apps run, and it owns the metadata
database. Tasks never do.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from altcraft.ui.marker import PREFIX, Marker, read_marker


@dataclass(frozen=True)
class RunInfo:
    dag_id: str
    run_id: str
    state: str | None
    run_type: str
    run_after: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    conf: dict[str, Any] | None


def _columns() -> tuple[Any, ...]:
    from airflow.models.dagrun import DagRun

    return (
        DagRun.dag_id, DagRun.run_id, DagRun._state, DagRun.run_type, DagRun.run_after, DagRun.start_date,
        DagRun.end_date, DagRun.logical_date, DagRun.data_interval_start, DagRun.data_interval_end,
        DagRun.conf,
    )  # fmt: skip


def run_info(dag_id: str, run_id: str) -> RunInfo | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            sa.select(*_columns()).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
        return RunInfo(*row) if row else None


def last_runs(dag_ids: Collection[str]) -> dict[str, RunInfo]:
    """The latest run (by ``run_after``) of each DAG that has one."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    found: dict[str, RunInfo] = {}
    with create_session() as session:
        for dag_id in sorted(dag_ids):
            row = session.execute(
                sa.select(*_columns())
                .where(DagRun.dag_id == dag_id)
                .order_by(DagRun.run_after.desc(), DagRun.id.desc())
                .limit(1)
            ).first()
            if row:
                found[dag_id] = RunInfo(*row)
    return found


def dag_marker(dag_id: str) -> Marker:
    """What the DAG's tags say of its source and grace (`altcraft.ui.marker`), as its last parse left them."""
    from airflow.models.dag import DagTag
    from airflow.utils.session import create_session

    with create_session() as session:
        tags = session.scalars(
            sa.select(DagTag.name).where(DagTag.dag_id == dag_id, DagTag.name.startswith(PREFIX))
        ).all()
    return read_marker(tags)


def readable_dag_ids(user: Any) -> set[str]:
    """DAGs this user may read, as Airflow's auth manager decides."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_authorized_dag_ids(user=user, method="GET")


def may_trigger(user: Any, dag_id: str) -> bool:
    """Whether the user may create runs of this DAG (what the trigger endpoint checks)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


def ui_root() -> str:
    """The path Airflow is served under (``[api] base_url``), without a trailing slash."""
    from airflow.api_fastapi.app import API_ROOT_PATH

    return (API_ROOT_PATH or "/").rstrip("/")


def dag_run_path(dag_id: str, run_id: str) -> str:
    return f"{ui_root()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_instance_path(dag_id: str, run_id: str, task_id: str) -> str:
    """The task instance page; ``task_id`` may carry a map index as ``name[3]`` (ledger notation)."""
    name, _, index = task_id.partition("[")
    path = f"{dag_run_path(dag_id, run_id)}/tasks/{quote(name, safe='')}"
    return f"{path}/mapped/{index.rstrip(']')}" if index else path
