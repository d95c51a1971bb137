"""A webhook pipeline whose components see different ledger databases: without a ``ledger_conn_id``, each
its own ``[altcraft] ledger_conn_id`` setting or ``AIRFLOW_HOME``; with one, each its own definition of that
connection. The DAG processor parses it, the API server's endpoint (its own lookup in a real metadata
database) stores deliveries, the watcher trigger fires for them, a worker's webhook source reads them -- on
SQLite, PostgreSQL and MariaDB, one process playing each component in turn by its configuration."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from altcraft.engines import database_location
from altcraft.pipelines.factory import pipeline_event_asset
from altcraft.pipelines.spec import PipelineSpec
from altcraft.sources import SourceError
from altcraft.webhooks.app import create_app
from altcraft.webhooks.kinds import SECRET_HEADER
from altcraft.webhooks.store import WebhookStore
from tests.ledger.test_store import MARIA, PG, _create_database, _drop_database
from tests.triggers.test_new_rows import AsyncStore, events_of
from tests.webhooks.test_shared_secrets import secret_connection, sync_dag_folder

SECRET = "drift-secret"
SPEC = {
    "id": "drift_hook",
    "timezone": "UTC",
    "start_date": "2026-03-01",
    "source": {"type": "webhook", "key_column": "email"},
    "trigger": {"type": "webhook", "auth": "secret", "secret_conn_id": "drift_hook_secret"},
    "mapping": {"matching": "email", "key": {"email": "email"}},
    "scenario": {"id": 12, "db_id": 1},
}


@pytest.fixture
def two_ledgers(airflow_db, tmp_path, monkeypatch) -> Iterator[dict[str, WebhookStore]]:
    """Connections ``drift_a`` and ``drift_b``, a SQLite ledger file each, and the webhook's secret."""
    for name in ("drift_a", "drift_b"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", f"sqlite:///{tmp_path / name}.db")
    secret_connection(monkeypatch, "drift_hook_secret", SECRET)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # the default SQLite ledger file, if anyone used it
    stores = {name: WebhookStore.from_conn_id(name) for name in ("drift_a", "drift_b")}
    yield stores
    sync_dag_folder([])
    for store in stores.values():
        store.engine.dispose()


def parsed_where(monkeypatch, configured: str, *, sync: bool = False) -> PipelineSpec:
    """The spec as a component whose ``[altcraft] ledger_conn_id`` is ``configured`` parses it (a worker
    parses the DAG file itself); ``sync``: the DAG processor, which writes the DAG to the metadata DB."""
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", configured)
    if sync:
        sync_dag_folder([SPEC])
    return PipelineSpec.model_validate(yaml.safe_load(yaml.safe_dump(SPEC)))


def post(contact: str) -> tuple[int, dict]:
    answer = TestClient(create_app()).post(
        "/drift_hook", json={"email": contact}, headers={SECRET_HEADER: SECRET}
    )
    return answer.status_code, answer.json()


def read_by_worker(spec: PipelineSpec, state: AsyncStore) -> list[str]:
    source = spec.source.build(state=state)
    try:
        return [record["email"] for batch in source.batches(None, 10) for record in batch]
    finally:
        source.close_probe()


def test_every_component_uses_the_ledger_the_dag_processor_parsed_or_the_worker_fails_saying_so(
    two_ledgers, monkeypatch
):
    """The API server stored a delivery in its own ``[altcraft] ledger_conn_id`` (drift_b), answered 200,
    the triggerer watched the DAG processor's (drift_a) and the worker read its own: acknowledged, never
    launched, not a word. The API server and the triggerer follow the DAG as parsed; a worker, which parses
    the spec again with its own setting, fails naming both databases, until its setting agrees."""
    parsed = parsed_where(monkeypatch, "drift_a", sync=True)
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "drift_b")  # the API server's and triggerer's
    assert post("ann@example.com") == (200, {"status": "accepted", "records": 1})
    assert (two_ledgers["drift_a"].count("drift_hook"), two_ledgers["drift_b"].count("drift_hook")) == (1, 0)
    state = AsyncStore()  # the event asset's state store
    [watcher] = pipeline_event_asset(parsed).watchers
    fired = asyncio.run(events_of(watcher.trigger, state, polls=1))
    assert [event["fingerprint"]["count"] for event in fired] == [1]

    worker = parsed_where(monkeypatch, "drift_b")
    with pytest.raises(
        SourceError, match=r"watched in the database of connection 'drift_a'.*\[altcraft\] ledger"
    ):
        read_by_worker(worker, state)
    assert read_by_worker(parsed_where(monkeypatch, "drift_a"), state) == ["ann@example.com"]


def test_a_dag_parsed_without_a_ledger_is_refused_by_a_component_whose_setting_names_one(
    two_ledgers, monkeypatch, caplog, capfd
):
    """Parsed where no ``[altcraft] ledger_conn_id`` is set (the SQLite file), the DAG cannot say which
    database an API server or a triggerer with a setting should use: both refuse, naming the setting, and
    the sender gets 503 (retries) instead of a 200 for a delivery nobody reads."""
    spec = parsed_where(monkeypatch, "", sync=True)
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "drift_b")
    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        assert post("ann@example.com") == (503, {"error": "not stored, retry later"})
    assert "StoreMismatch" in caplog.text and "[altcraft] ledger_conn_id here is 'drift_b'" in caplog.text
    assert "ann@" not in caplog.text
    assert two_ledgers["drift_b"].count("drift_hook") == 0

    [watcher] = pipeline_event_asset(spec).watchers
    assert asyncio.run(events_of(watcher.trigger, AsyncStore(), polls=1)) == []
    out, err = capfd.readouterr()
    assert "Probe of drift_hook failed" in out + err and "parsed with no ledger connection" in out + err


class EventState:
    """The pipeline's event asset's state store in the metadata database, through the configured state
    backend, as the triggerer and a worker reach it (JSON values)."""

    def __init__(self, pipeline: str) -> None:
        from airflow.models.asset import AssetModel
        from airflow.state import AssetScope
        from airflow.utils.session import create_session

        uri = f"altcraft-pipeline://{pipeline}/events"
        with create_session() as session:
            asset_id = session.query(AssetModel.id).filter(AssetModel.uri == uri).scalar()
        self.scope = AssetScope(asset_id=asset_id)

    def clear(self) -> None:
        """Forget what another test's pipeline of this id recorded (the asset keeps its id and state)."""
        from airflow.state import get_state_backend

        get_state_backend().clear(self.scope)

    def get(self, key: str, default: Any = None) -> Any:
        from airflow.state import get_state_backend

        value = get_state_backend().get(self.scope, key)
        return default if value is None else json.loads(value)

    def set(self, key: str, value: Any) -> None:
        from airflow.state import get_state_backend

        get_state_backend().set(self.scope, key, json.dumps(value))

    async def aget(self, key: str, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get, key, default)

    async def aset(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self.set, key, value)


#: The ledger's two databases per kind: one connection id (None: the default SQLite file), defined as the
#: first where the deliveries are stored and as the second elsewhere. PostgreSQL's URL carries a password
#: (trust authentication ignores it), which no message may show.
SERVERS = {
    "postgresql": "postgresql://postgres:pg-pass-1234@127.0.0.1:5432",
    "mariadb": "mysql://root@127.0.0.1:3306",
}
ADMIN = {"postgresql": PG, "mariadb": MARIA}  # where the two databases are created and dropped


@pytest.fixture(params=["sqlite", "sqlite-home", "postgresql", "mariadb"])
def one_id_two_databases(request, airflow_db, tmp_path, monkeypatch) -> Iterator[tuple[str, list[dict]]]:
    """The kind, and the environment of each definition of the ledger connection ``drift_ledger`` (for
    ``sqlite-home``: no connection, two ``AIRFLOW_HOME``s); the webhook's secret."""
    secret_connection(monkeypatch, "drift_hook_secret", SECRET)
    monkeypatch.delenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", raising=False)
    kind, names = request.param, [f"altcraft_drift_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    if kind == "sqlite-home":
        environments = [{"AIRFLOW_HOME": str(tmp_path / name)} for name in names]
    elif kind == "sqlite":
        environments = [{"AIRFLOW_CONN_DRIFT_LEDGER": f"sqlite:///{tmp_path / name}.db"} for name in names]
    else:
        for name in names:
            _create_database(ADMIN[kind], name)
        environments = [{"AIRFLOW_CONN_DRIFT_LEDGER": f"{SERVERS[kind]}/{name}"} for name in names]
    yield kind, environments
    sync_dag_folder([])
    if kind in SERVERS:
        for name in names:
            _drop_database(ADMIN[kind], name)


def as_defined(monkeypatch, environment: dict[str, str]) -> None:
    """This process as a component whose environment defines the ledger so."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def stored_count(monkeypatch, environment: dict[str, str], conn_id: str | None) -> int:
    as_defined(monkeypatch, environment)
    store = WebhookStore.from_conn_id(conn_id)
    try:
        return store.count("drift_hook")
    finally:
        store.engine.dispose()


def test_one_connection_id_defined_differently_per_component_is_caught_where_deliveries_are_read_or_stored(
    one_id_two_databases, monkeypatch, caplog
):
    """The components compared connection ids: one id pointing to another database on a worker (or a
    default SQLite file under another AIRFLOW_HOME) read nothing, not a word, and the deliveries the API
    server acknowledged were never launched. Now each records where its connection points (dialect, host,
    port, database, or the file's path): a worker whose database differs fails before reading, naming both
    connections and the parts that differ, the deliveries stay stored; an API server whose database is not
    the watched one answers 503 (the sender retries) and stores nothing. No password in any message."""
    kind, (storing, other) = one_id_two_databases
    conn_id = None if kind == "sqlite-home" else "drift_ledger"
    spec = {**SPEC, "ledger_conn_id": conn_id} if conn_id else SPEC
    sync_dag_folder([spec])
    parsed = PipelineSpec.model_validate(yaml.safe_load(yaml.safe_dump(spec)))
    state = EventState("drift_hook")
    state.clear()

    as_defined(monkeypatch, storing)  # the API server and the triggerer
    assert post("ann@example.com") == (200, {"status": "accepted", "records": 1})
    [watcher] = pipeline_event_asset(parsed).watchers
    fired = asyncio.run(events_of(watcher.trigger, state, polls=1))
    assert [event["fingerprint"]["count"] for event in fired] == [1]

    as_defined(monkeypatch, other)  # a worker
    with pytest.raises(SourceError) as raised:
        read_by_worker(parsed, state)
    message = str(raised.value)
    named = f"connection {conn_id!r}" if conn_id else "the default ledger database (the SQLite file)"
    assert f"stored in the database of {named} and this component's {named} is another (" in message
    part = "path" if kind.startswith("sqlite") else "database"
    assert f"{part} '" in message and "there, '" in message and "(they stay stored)" in message
    assert "pg-pass-1234" not in message
    assert stored_count(monkeypatch, storing, conn_id) == 1

    as_defined(monkeypatch, storing)  # the worker defined alike
    assert read_by_worker(parsed, state) == ["ann@example.com"]

    # the triggerer's definition differs: the API server refuses what its watcher would never see
    as_defined(monkeypatch, other)
    assert asyncio.run(events_of(watcher.trigger, state, polls=1)) == []
    as_defined(monkeypatch, storing)
    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        assert post("bob@example.com") == (503, {"error": "not stored, retry later"})
    assert "StoreMismatch: the deliveries are watched in the database of" in caplog.text
    assert "bob@" not in caplog.text and "pg-pass-1234" not in caplog.text
    assert stored_count(monkeypatch, storing, conn_id) == 1
    assert stored_count(monkeypatch, other, conn_id) == 0


def test_a_location_is_where_a_connection_points_never_its_user_or_password(tmp_path, monkeypatch):
    """One database written two ways (another driver, user, host case, the default port left out, a SQLite
    file by a relative path) is one location, which names no user or password."""
    monkeypatch.chdir(tmp_path)
    ways = [
        (
            "postgresql://alice:pw-1@DB.example.org/crm",
            "postgresql+psycopg2://bob:pw-2@db.example.org:5432/crm",
        ),
        ("mysql://root@db.example.org/crm", "mysql+pymysql://app:pw-3@db.example.org:3306/crm"),
        ("sqlite:///ledger.db", f"sqlite:///{tmp_path / 'ledger.db'}"),
    ]
    for one, two in ways:
        assert database_location(sa.create_engine(one)) == database_location(sa.create_engine(two))
    assert database_location(sa.create_engine(ways[0][0])) == {
        "dialect": "postgresql",
        "host": "db.example.org",
        "port": "5432",
        "database": "crm",
    }
    other = database_location(sa.create_engine("postgresql://alice:pw-1@db.example.org/crm_2"))
    assert other["database"] == "crm_2" and "pw-1" not in str(other)
