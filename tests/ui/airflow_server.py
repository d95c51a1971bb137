"""Airflow's API server (the Altcraft page mounted as in production) for the page's HTTP tests.

Run as ``python -m tests.ui.airflow_server PORT DAG_ID...`` with ``AIRFLOW_HOME`` holding a migrated
metadata database: it adds each DAG with finished runs (`add_runs`) and serves Airflow's whole app.
The auth manager is Airflow's simple one, except that the user ``restricted`` may only read the DAG
``open_dag`` and the user ``nobody`` no DAG (what per-DAG roles of a real auth manager allow). The DAGs of
`PIPELINES` carry the tags their pipeline spec gives them (`altcraft.pipelines.build_dag`).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

RESTRICTED, READABLE, NOBODY = "restricted", "open_dag", "nobody"
WATERMARK, SLOW_GRACE = "watermark_dag", "slow_grace_dag"
_SQL = {"type": "sql_table", "conn_id": "crm", "table": "contacts", "key_column": "id"}
#: Pipelines by DAG id: one whose source keeps a watermark, one reconciling with a two-hour grace.
PIPELINES: dict[str, dict[str, Any]] = {
    dag_id: {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2025-01-01",
        "source": source,
        "mapping": {"matching": "email", "key": {"email": "email"}},
        "scenario": scenario,
    }
    for dag_id, source, scenario in (
        (WATERMARK, {**_SQL, "watermark_column": "updated_at"}, {"id": 11}),
        (
            SLOW_GRACE,
            {**_SQL, "created_at_column": "created_at"},
            {"id": 11, "reconcile_grace_seconds": 7200},
        ),
    )
}


class PerDagAuthManager(SimpleAuthManager):
    """The simple auth manager, with one user limited to reading one DAG and one to none."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if user.get_name() == RESTRICTED:
            return method == "GET" and details is not None and details.id == READABLE
        if user.get_name() == NOBODY:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )


def tags(dag_id: str) -> set[str]:
    """The DAG's tags: its pipeline's, else none."""
    from altcraft.pipelines import PipelineSpec, build_dag

    return build_dag(PipelineSpec.model_validate(PIPELINES[dag_id])).tags if dag_id in PIPELINES else set()


def add_runs(dag_ids: list[str]) -> None:
    """Each DAG with one successful manual run ``r1`` over the last day, and an earlier one
    ``no_interval`` without a logical date or data interval."""
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    now = datetime.now(UTC)
    with create_session() as session:
        session.add(DagBundleModel(name="dags-folder"))
        session.flush()
        for dag_id in dag_ids:
            session.add(DagModel(dag_id=dag_id, bundle_name="dags-folder", fileloc=f"/dags/{dag_id}.py"))
        session.flush()
        session.add_all(DagTag(dag_id=dag_id, name=tag) for dag_id in dag_ids for tag in tags(dag_id))
        for dag_id in dag_ids:
            session.add(
                DagRun(
                    dag_id=dag_id,
                    run_id="r1",
                    run_type=DagRunType.MANUAL,
                    logical_date=now - timedelta(hours=1),
                    data_interval=(now - timedelta(days=1), now - timedelta(hours=1)),
                    run_after=now - timedelta(hours=1),
                    state=DagRunState.SUCCESS,
                )
            )
            session.add(  # an earlier run without a logical date, as Airflow 3 triggers or an event starts
                DagRun(
                    dag_id=dag_id,
                    run_id="no_interval",
                    run_type=DagRunType.MANUAL,
                    run_after=now - timedelta(days=2),
                    state=DagRunState.SUCCESS,
                )
            )


def main(port: int, dag_ids: list[str]) -> None:
    import uvicorn
    from airflow.api_fastapi.app import create_app

    add_runs(dag_ids)
    uvicorn.run(create_app("all"), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
