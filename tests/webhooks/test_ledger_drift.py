"""A webhook pipeline without a ``ledger_conn_id`` whose components see different ``[altcraft]
ledger_conn_id`` settings: the DAG processor parses it, the API server's endpoint (its own lookup in a real
metadata database) stores deliveries, the watcher trigger fires for them, a worker's webhook source reads
them -- two SQLite ledger databases, one process playing each component in turn by its configuration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient

from altcraft.pipelines.factory import pipeline_event_asset
from altcraft.pipelines.spec import PipelineSpec
from altcraft.sources import SourceError
from altcraft.webhooks.app import create_app
from altcraft.webhooks.kinds import SECRET_HEADER
from altcraft.webhooks.store import WebhookStore
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
    with pytest.raises(SourceError, match=r"stored and watched in connection 'drift_a'.*\[altcraft\] ledger"):
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
