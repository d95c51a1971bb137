"""Run real DAGs with ``dag.test()`` and read what they left in the metadata database."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def install_dag(dag_file: Path, config: dict[str, Any], dags_folder: Path) -> Any:
    """Copy ``dag_file`` into the DAG folder with its JSON config beside it and import its DAG."""
    for old in dags_folder.glob("*"):
        if old.is_file():
            old.unlink()
    target = dags_folder / dag_file.name
    shutil.copy(dag_file, target)
    (dags_folder / f"{dag_file.stem}.json").write_text(json.dumps(config))
    return import_dag(target, f"test_dag_{dag_file.stem}_{config['dag_id']}")


def import_dag(dag_file: Path, module_name: str) -> Any:
    """Import ``dag_file`` as module ``module_name`` and return its ``dag``."""
    spec = importlib.util.spec_from_file_location(module_name, dag_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.dag


def run_dag(dag: Any, logical_date: datetime) -> Any:
    """``dag.test()`` for one logical date; returns the finished DagRun."""
    return dag.test(logical_date=logical_date)


def xcom_values(dag_id: str, run_id: str, key: str = "return_value") -> dict[tuple[str, int], Any]:
    """XCom values of a run by (task_id, map_index)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key=key)).all()
        return {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}


def rendered_fields(dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    """What Airflow stored of each task's rendered template fields (``RenderedTaskInstanceFields``)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(RenderedTaskInstanceFields).where(
        RenderedTaskInstanceFields.dag_id == dag_id, RenderedTaskInstanceFields.run_id == run_id
    )
    with create_session() as session:
        return {(row.task_id, row.map_index): row.rendered_fields for row in session.scalars(query)}


def asset_event_extras(uri: str) -> list[dict[str, Any]]:
    """The ``extra`` of every event of the asset with this URI, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        )
        return list(session.scalars(query))


def task_states(dag_run: Any) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}


def env_config_path(name: str) -> str:
    return os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], f"{name}.json")
