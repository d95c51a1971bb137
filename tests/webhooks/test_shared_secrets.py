"""Webhooks whose secret connections hold one secret, as the API server finds them: its own lookup
(`airflow_config`) in a real Airflow metadata database, into which the pipelines' DAGs are synced as the DAG
processor syncs them, and connections given as Airflow reads them (environment variables)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
from airflow.secrets import BaseSecretsBackend
from fastapi.testclient import TestClient

from altcraft.webhooks import app as app_module
from altcraft.webhooks.app import SecretUnknown, airflow_config, create_app
from altcraft.webhooks.store import WebhookStore
from tests.pipelines.test_pipeline_runs import write_dag_folder

SECRET = "one-secret-held-by-two-connections"
FORM = {"content-type": "application/x-www-form-urlencoded"}
BODY = b"contacts%5Badd%5D%5B0%5D%5Bid%5D=7"


def b24_body(token: str) -> bytes:
    return urlencode(
        [("event", "ONCRMCONTACTADD"), ("data[FIELDS][ID]", "7"), ("auth[application_token]", token)]
    ).encode()


def webhook_spec(pipeline: str, auth: str, secret_conn_id: str) -> dict:
    return {
        "id": pipeline,
        "timezone": "UTC",
        "start_date": "2026-03-01",
        "ledger_conn_id": "shared_hook_ledger",
        "source": {"type": auth, "conn_id": f"crm_{auth}"},
        "trigger": {"type": "webhook", "auth": auth, "secret_conn_id": secret_conn_id},
        "mapping": {"fields": {"CRM_ID": {"source": "id", "type": "string"}}},
        "scenario": {"id": 12, "db_id": 1},
    }


def sync_dag_folder(specs: list[dict]) -> None:
    """The loader and ``specs`` as the DAG folder, parsed and written to the metadata database (DAGs, their
    event assets with the webhook settings, the assets activated), as ``dag.test()`` syncs its bundle."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    write_dag_folder(specs)
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert not bag.import_errors, bag.import_errors
        sync_bag_to_db(bag, bundle.name, bundle.version)


def secret_connection(monkeypatch, conn_id: str, password: str) -> None:
    conn = json.dumps({"conn_type": "generic", "password": password})
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Iterator[WebhookStore]:
    monkeypatch.setenv("AIRFLOW_CONN_SHARED_HOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    store = WebhookStore.from_conn_id("shared_hook_ledger")
    yield store
    store.engine.dispose()


@pytest.fixture
def four_webhooks(airflow_db, monkeypatch) -> Iterator[None]:
    """Webhooks ``shared_amo`` (amocrm) and ``shared_b24`` (bitrix24), each with a secret connection of its
    own, and HubSpot webhooks ``shared_hs1`` and ``shared_hs2`` whose two connections hold one secret; the
    DAG folder is emptied after."""
    sync_dag_folder(
        [
            webhook_spec("shared_amo", "amocrm", "amo_hook_secret"),
            webhook_spec("shared_b24", "bitrix24", "b24_hook_secret"),
            webhook_spec("shared_hs1", "hubspot", "hs1_hook_secret"),
            webhook_spec("shared_hs2", "hubspot", "hs2_hook_secret"),
        ]
    )
    for conn_id in ("hs1_hook_secret", "hs2_hook_secret"):
        secret_connection(monkeypatch, conn_id, "one-app-secret")
    yield
    sync_dag_folder([])


def test_two_connections_holding_one_secret_refuse_both_webhooks_naming_the_connections(
    four_webhooks, store, monkeypatch, caplog
):
    """The secret was looked up per pipeline only: both took deliveries proven by the one secret (an amoCRM
    URL's secret was a Bitrix24 token too). HubSpot webhooks may share one (their proof names the URL), and
    a webhook whose connection is missing does not make another unusable."""
    secret_connection(monkeypatch, "amo_hook_secret", SECRET)
    secret_connection(monkeypatch, "b24_hook_secret", SECRET)
    client = TestClient(create_app())

    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        answer = client.post(f"/shared_amo?secret={SECRET}", content=BODY, headers=FORM)
        b24 = client.post("/shared_b24", content=b24_body(SECRET), headers=FORM)

    assert (answer.status_code, b24.status_code) == (503, 503), answer.text
    assert answer.json() == {"error": "webhook not configured"}
    assert store.count("shared_amo") == store.count("shared_b24") == 0
    [amo_line, b24_line] = [r.getMessage() for r in caplog.records]
    assert amo_line == (
        "Webhook shared_amo is not usable: SharedSecret: its secret (connection 'amo_hook_secret') is "
        "also held by connection 'b24_hook_secret' of webhook shared_b24; the proofs of auth amocrm, "
        "bitrix24 name no pipeline, so a delivery to one of them could be taken by another: their "
        "deliveries are refused until each has a secret of its own"
    )
    assert "'amo_hook_secret' of webhook shared_amo" in b24_line
    assert SECRET not in caplog.text + answer.text + b24.text

    # HubSpot's signature covers the URL: two HubSpot apps' webhooks may hold one secret
    assert airflow_config("shared_hs1").secret == airflow_config("shared_hs2").secret == "one-app-secret"
    # a webhook whose connection is missing is its own problem, not the others'
    monkeypatch.delenv("AIRFLOW_CONN_B24_HOOK_SECRET")
    client = TestClient(create_app())
    assert client.post(f"/shared_amo?secret={SECRET}", content=BODY, headers=FORM).status_code == 200
    assert client.post("/shared_b24", content=BODY, headers=FORM).status_code == 503
    secret_connection(monkeypatch, "b24_hook_secret", "another-secret")  # each a secret of its own
    answer = TestClient(create_app()).post("/shared_b24", content=b24_body("another-secret"), headers=FORM)
    assert answer.json() == {"status": "accepted", "records": 1}


@pytest.fixture
def fifty_webhooks(airflow_db) -> Iterator[list[str]]:
    """50 amoCRM webhooks, each with a secret connection of its own in the metadata database (where the API
    server's secrets backend finds them); the DAG folder and the connections are emptied after."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    pipelines = [f"busy_{n:02d}" for n in range(50)]
    sync_dag_folder([webhook_spec(p, "amocrm", f"{p}_secret") for p in pipelines])
    with create_session() as session:
        session.add_all(
            Connection(conn_id=f"{p}_secret", conn_type="generic", password=f"secret of {p}")
            for p in pipelines
        )
    yield pipelines
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.like("busy_%")).delete(synchronize_session=False)
    sync_dag_folder([])


def test_fifty_busy_webhooks_read_each_secret_connection_about_once_per_cache_period(
    fifty_webhooks, store, monkeypatch, caplog
):
    """Each lookup read the secret of every other active webhook: with N webhooks taking deliveries, N² calls
    of the secrets backend per `CACHE_SECONDS` (main: 2,500 for 50, 2.0 s of metadata queries on SQLite; a
    Vault is slower). Now the app keeps each connection's digest: about two reads a connection."""
    from airflow.models.connection import Connection

    real, calls = Connection.get_connection_from_secrets.__func__, []

    def counted(cls, conn_id):
        calls.append(conn_id)
        return real(cls, conn_id)

    monkeypatch.setattr(Connection, "get_connection_from_secrets", classmethod(counted))
    client = TestClient(create_app())
    started = time.perf_counter()
    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        codes = [
            client.post(f"/{p}?secret=secret of {p}", content=BODY, headers=FORM).status_code
            for p in fifty_webhooks
        ]
    logging.getLogger(__name__).warning(
        "50 deliveries to 50 webhooks: %d secrets-backend calls, %.2f s",
        len(calls),
        time.perf_counter() - started,
    )
    assert codes == [200] * 50, caplog.text
    assert [store.count(p) for p in fifty_webhooks] == [1] * 50
    secret_reads = [conn_id for conn_id in calls if conn_id.startswith("busy_")]
    assert len(secret_reads) <= 2 * len(fifty_webhooks), len(secret_reads)


#: Environment variables naming the connections the `FailingBackend` fails to read: raising an error (which
#: Airflow takes for "not defined", after reading the next backends), or denying access (which it raises).
DOWN, DENIED = "ALTCRAFT_TEST_SECRETS_DOWN", "ALTCRAFT_TEST_SECRETS_DENIED"
#: ... or denying it with an error quoting what it holds (the secret too), which Airflow raises as it is.
UNPARSABLE = "ALTCRAFT_TEST_SECRETS_UNPARSABLE"
VAULT = "ALTCRAFT_TEST_VAULT_"


class FailingBackend(BaseSecretsBackend):
    """A secrets backend (``[secrets] backend``) holding the connections `vault_connection` gives it, failing
    for those `DOWN` or `DENIED` name."""

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        if conn_id in os.environ.get(DOWN, "").split(","):
            raise ConnectionError("the secrets backend is unreachable")
        if conn_id in os.environ.get(DENIED, "").split(","):
            raise AirflowSecretsBackendAccessDenied(f"access to connection {conn_id} denied")
        if conn_id in os.environ.get(UNPARSABLE, "").split(","):
            raise AirflowSecretsBackendAccessDenied(f"refused: {os.environ.get(VAULT + conn_id.upper())}")
        return os.environ.get(VAULT + conn_id.upper())


def vault_connection(monkeypatch, conn_id: str, password: str) -> None:
    monkeypatch.setenv(VAULT + conn_id.upper(), json.dumps({"conn_type": "generic", "password": password}))


@pytest.fixture
def failing_backend(four_webhooks, store, monkeypatch) -> None:
    """`FailingBackend` as the secrets backend, each lookup made afresh (no `CACHE_SECONDS`)."""
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", f"{__name__}.FailingBackend")
    monkeypatch.setattr(app_module, "CACHE_SECONDS", 0)


def deliver(client: TestClient, amo_secret: str, b24_secret: str) -> tuple[int, int]:
    """The answers of ``shared_amo`` and ``shared_b24`` to a delivery proven by these secrets."""
    amo = client.post(f"/shared_amo?secret={amo_secret}", content=BODY, headers=FORM)
    b24 = client.post("/shared_b24", content=b24_body(b24_secret), headers=FORM)
    return amo.status_code, b24.status_code


@pytest.mark.parametrize("failure", [DOWN, DENIED, UNPARSABLE])
def test_another_webhooks_failing_secrets_backend_keeps_its_last_read_secret(
    failing_backend, store, monkeypatch, caplog, failure
):
    """A webhook's lookup reads every other webhook's secret (whether they share one), and any failure made
    it 503 as well: one broken connection took every webhook down. The last secret read of that connection
    is compared instead (its keyed hash, in this process): the webhook that holds another's secret is still
    refused, the others take their deliveries, the broken one is 503 naming its connection."""
    secret_connection(monkeypatch, "amo_hook_secret", "amo-secret")
    vault_connection(monkeypatch, "b24_hook_secret", "b24-secret")
    client = TestClient(create_app())
    assert deliver(client, "amo-secret", "b24-secret") == (200, 200)

    monkeypatch.setenv(failure, "b24_hook_secret")
    with caplog.at_level(logging.WARNING, logger="altcraft.webhooks.app"):
        assert deliver(client, "amo-secret", "b24-secret") == (200, 503)
    assert "connection 'b24_hook_secret' could not be read" in caplog.text
    assert "Webhook shared_b24 is not usable" in caplog.text and "b24-secret" not in caplog.text

    # the same secret in both: refused while b24's connection is read, and after, as last read
    monkeypatch.delenv(failure)
    vault_connection(monkeypatch, "b24_hook_secret", "amo-secret")
    assert deliver(client, "amo-secret", "amo-secret") == (503, 503)
    monkeypatch.setenv(failure, "b24_hook_secret")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        assert deliver(client, "amo-secret", "amo-secret") == (503, 503)
    assert "also held by connection 'b24_hook_secret' of webhook shared_b24" in caplog.text
    assert store.count("shared_amo") == store.count("shared_b24") == 1
    assert "amo-secret" not in caplog.text


def test_a_connection_never_read_refuses_the_webhooks_that_may_share_its_secret(
    failing_backend, monkeypatch, caplog
):
    """Denied before it was ever read, another webhook's connection may hold this one's secret: both are
    refused, naming it, until it is read."""
    secret_connection(monkeypatch, "amo_hook_secret", "amo-secret")
    vault_connection(monkeypatch, "b24_hook_secret", "b24-secret")
    monkeypatch.setenv(DENIED, "b24_hook_secret")
    client = TestClient(create_app())
    with caplog.at_level(logging.ERROR, logger="altcraft.webhooks.app"):
        assert deliver(client, "amo-secret", "b24-secret") == (503, 503)
    [amo_line, b24_line] = [r.getMessage() for r in caplog.records]
    assert amo_line == (
        "Webhook shared_amo is not usable: SecretUnknown: the secret of connection 'b24_hook_secret' of "
        "webhook shared_b24 (AirflowSecretsBackendAccessDenied) could not be read, so whether it holds this "
        "webhook's secret (connection 'amo_hook_secret') is not known: its deliveries are refused until it is"
    )
    assert b24_line.startswith(
        "Webhook shared_b24 is not usable: LookupError: connection 'b24_hook_secret' of webhook shared_b24 "
        "could not be read: AirflowSecretsBackendAccessDenied"
    )
    with pytest.raises(SecretUnknown, match="'b24_hook_secret' of webhook shared_b24"):
        airflow_config("shared_hs1")  # a HubSpot proof names the URL, a Bitrix24 one does not
    monkeypatch.delenv(DENIED)
    assert deliver(client, "amo-secret", "b24-secret") == (200, 200)
