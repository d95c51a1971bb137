"""The scenario asset of a pipeline, as the metadata database and the scheduler see it: one active asset per
connection and scenario, and the one a consumer DAG declares with the documented URI.

Airflow 3 activates an asset only if no other active asset has its name or its URI. Before, the asset was
named ``altcraft_scenario_<id>``: two pipelines launching one scenario id on two connections (prod and
stage) made two assets of one name, and a consumer scheduled on ``Asset("altcraft://<conn>/scenarios/<id>")``
(named after its URI) made a third of one URI; the scheduler left one of each pair inactive with an
``ASSET_CONFLICT`` warning on its DAGs, and the consumer never saw the pipeline's events.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from altcraft.operators.import_and_launch import scenario_asset
from tests.pipelines.conftest import EXAMPLES, LOADER, make_bundle
from tests.pipelines.test_import_errors import _parse_and_store

SCENARIO_ID = 12  # the examples' scenario
CONNECTIONS = ("altcraft_prod", "altcraft_stage")

CONSUMER = """\
from airflow.sdk import DAG, Asset
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="{dag_id}", schedule=[Asset("{uri}")]):
    EmptyOperator(task_id="report")
"""


def spec_on(folder: Path, dag_id: str, conn_id: str, scenario_id: int = SCENARIO_ID) -> Path:
    """The first example spec under another id, launching scenario ``scenario_id`` through connection
    ``conn_id``."""
    folder.mkdir(parents=True, exist_ok=True)
    example = EXAMPLES[0]
    text = example.read_text().replace(f"id: {example.stem}", f"id: {dag_id}")
    assert f"scenario: {{id: {SCENARIO_ID}," in text and "altcraft_conn_id" not in text
    text = text.replace(f"scenario: {{id: {SCENARIO_ID},", f"scenario: {{id: {scenario_id},")
    path = folder / f"{dag_id}.yaml"
    path.write_text(f"{text}altcraft_conn_id: {conn_id}\n")
    return path


def test_one_scenario_on_two_connections_and_the_consumers_of_its_documented_uris_are_all_active(
    tmp_path, airflow_db
):
    from airflow.assets.manager import AssetManager
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.asset import AssetActive, AssetDagRunQueue, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagwarning import DagWarning, DagWarningType
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    # the metadata database is the test session's: names of this test's own
    suffix = uuid.uuid4().hex[:8]
    connections = [f"{conn}_{suffix}" for conn in CONNECTIONS]
    pipelines = {conn: f"launch_{conn}" for conn in connections}
    consumers = {conn: f"report_{conn}" for conn in connections}
    uris = {conn: f"altcraft://{conn}/scenarios/{SCENARIO_ID}" for conn in connections}
    root = make_bundle(
        tmp_path / "bundle", [spec_on(tmp_path / "specs", dag_id, conn) for conn, dag_id in pipelines.items()]
    )
    # A consumer on each connection's URI: whichever pipeline's asset Airflow activates first, the old
    # assets clashed with one consumer by URI and with each other by name.
    for conn, dag_id in consumers.items():
        (root / f"{dag_id}.py").write_text(CONSUMER.format(dag_id=dag_id, uri=uris[conn]))
    bundle_name = f"asset-test-{suffix}"
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))

    results = _parse_and_store(
        root, bundle_name, [LOADER.name, *(f"{dag_id}.py" for dag_id in consumers.values())]
    )
    # The scheduler's pass over every asset (each loop, every parsing_cleanup_interval): activates what is
    # referenced unless another active asset has its name or URI, and warns the DAGs of those it cannot.
    SchedulerJobRunner(job=Job())._update_asset_orphanage()

    assert sorted(dag.dag_id for dag in results[LOADER.name].serialized_dags) == sorted(pipelines.values())
    with create_session() as session:
        assets = session.execute(
            select(AssetModel.name, AssetModel.uri, AssetActive.name.is_not(None))
            .outerjoin(AssetActive, AssetModel.active)
            .where(AssetModel.uri.in_(uris.values()))
            .order_by(AssetModel.uri, AssetModel.name)
        ).all()
        warnings = session.execute(
            select(DagWarning.dag_id, DagWarning.message)
            .where(
                DagWarning.warning_type == DagWarningType.ASSET_CONFLICT,
                DagWarning.dag_id.in_([*pipelines.values(), *consumers.values()]),
            )
            .order_by(DagWarning.dag_id)
        ).all()
    inactive = [(name, uri) for name, uri, active in assets if not active]
    warned = [tuple(warning) for warning in warnings]
    assert (inactive, warned) == ([], []), f"inactive: {inactive}; ASSET_CONFLICT warnings: {warned}"
    # one asset per connection and scenario, the same as its consumer's
    assert [(name, uri) for name, uri, _ in assets] == [(uris[conn], uris[conn]) for conn in connections]

    # each pipeline's event (a task's outlet, registered as the task runner does) queues its consumer only
    with create_session() as session:
        session.execute(
            update(DagModel).where(DagModel.dag_id.in_(consumers.values())).values(is_paused=False)
        )
        queued = {}
        for conn in connections:
            key = scenario_asset(conn, SCENARIO_ID)
            model = session.scalar(
                select(AssetModel).where(
                    AssetModel.name == key.name, AssetModel.uri == key.uri, AssetModel.active.has()
                )
            )
            assert model is not None, f"{key} is not an active asset"
            AssetManager.register_asset_change(asset=model, extra={"launched": 1}, session=session)
            session.flush()
            queued[conn] = session.scalars(
                select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == model.id)
            ).all()
    assert queued == {conn: [dag_id] for conn, dag_id in consumers.items()}


OLD_VERSION = """\
from airflow.sdk import DAG, Asset
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="{dag_id}", schedule=None):
    EmptyOperator(task_id="launch", outlets=[Asset(name="altcraft_scenario_{id}", uri="{uri}")])
"""


def test_upgrading_moves_the_scenario_to_the_asset_named_by_its_uri_without_a_conflict(tmp_path, airflow_db):
    """An earlier version's asset (``altcraft_scenario_<id>``, same URI) is active until the pipeline is
    parsed again; then it is orphaned and the new one activated in the same scheduler pass."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.asset import AssetActive
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagwarning import DagWarning
    from airflow.utils.session import create_session
    from sqlalchemy import select

    suffix = uuid.uuid4().hex[:8]
    dag_id, conn, scenario_id = f"launch_{suffix}", f"altcraft_prod_{suffix}", int(suffix, 16) + 1
    uri = f"altcraft://{conn}/scenarios/{scenario_id}"
    bundle_name = f"asset-upgrade-{suffix}"
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))
    scheduler = SchedulerJobRunner(job=Job())

    def active() -> list[tuple[str, str]]:
        with create_session() as session:
            query = select(AssetActive.name, AssetActive.uri).where(AssetActive.uri == uri)
            return [tuple(row) for row in session.execute(query)]

    before = tmp_path / "before"
    before.mkdir()
    (before / "launch.py").write_text(OLD_VERSION.format(dag_id=dag_id, id=scenario_id, uri=uri))
    _parse_and_store(before, bundle_name, ["launch.py"])
    scheduler._update_asset_orphanage()
    assert active() == [(f"altcraft_scenario_{scenario_id}", uri)]

    after = make_bundle(tmp_path / "after", [spec_on(tmp_path / "specs", dag_id, conn, scenario_id)])
    _parse_and_store(after, bundle_name, [LOADER.name])
    scheduler._update_asset_orphanage()

    assert active() == [(uri, uri)]
    with create_session() as session:
        assert session.scalars(select(DagWarning.message).where(DagWarning.dag_id == dag_id)).all() == []
