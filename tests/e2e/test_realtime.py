"""End to end, event-driven: a polled PostgreSQL table and a webhook endpoint launch contacts within seconds.

One stack for every check (scheduler, triggerer, DAG processor and API server on a fresh PostgreSQL
metadata database; the CRM table, the ledger and the webhook store in another database):

* ``rt_poll`` polls ``contacts`` every second and keeps a daily schedule as a safety net, with a 2 day
  lookback, so its event runs overlap the scheduled run: rows inserted while it is idle are launched
  without waiting for the schedule, and rows both kinds of run read are launched once.
* ``rt_hook`` takes HMAC-signed webhooks: 1,000 sent in a burst (with the triggerer restarted halfway)
  are launched once each in a few runs; a replayed delivery is stored once; a forged one is refused.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from demo.airflow_api import wait_for
from demo.airflow_env import airflow_command

from altcraft.pipelines.events import WATERMARK_KEY
from altcraft.sources.webhook import POSITIONS_KEY
from altcraft.webhooks.kinds import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from altcraft.webhooks.store import WebhookStore

from .conftest import make_dags_folder, start_airflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

POLL, HOOK = "rt_poll", "rt_hook"
SCENARIOS = {POLL: 12, HOOK: 14}
SECRET = "e2e-webhook-secret"
BURST = 1000
MAPPING = {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "first_name"}}
COMMON = {"timezone": "UTC", "start_date": "2024-01-01", "retries": 1, "retry_delay": "1s"}
COMMON |= {"mapping": MAPPING, "ledger_conn_id": "e2e_crm", "max_rejected_ratio": 0.5}
SPECS: dict[str, dict[str, Any]] = {
    POLL: {
        "id": POLL,
        **COMMON,
        "schedule": "1d",  # the safety net; its next run (midnight UTC) stays out of the test
        "lookback": "2d",
        "source": {
            "type": "sql_table",
            "conn_id": "e2e_crm",
            "table": "rt_contacts",
            "key_column": "id",
            "created_at_column": "created_at",
        },
        "trigger": {"type": "poll", "interval": "1s"},
        "scenario": {"id": SCENARIOS[POLL], "db_id": 1},
    },
    HOOK: {
        "id": HOOK,
        **COMMON,
        "source": {"type": "webhook", "key_column": "email"},
        "trigger": {"type": "webhook", "auth": "hmac", "secret_conn_id": "rt_secret", "interval": "1s"},
        "scenario": {"id": SCENARIOS[HOOK], "db_id": 1},
        "delivery": {"batch_size": 500},
    },
}
WAIT = 300  # generous: the machine is shared; the bench measures how fast it really is


def crm_url(pg_databases: dict[str, str]) -> str:
    return f"postgresql+psycopg2://{pg_databases['crm']}"


def insert(engine: sa.Engine, first: int, count: int, at: datetime) -> list[str]:
    rows = [
        {"id": i, "email": f"poll{i}@example.com", "first_name": f"P{i}", "created_at": at}
        for i in range(first, first + count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO rt_contacts VALUES (:id, :email, :first_name, :created_at)"), rows)
    return [row["email"] for row in rows]


@pytest.fixture(scope="module")
def crm(pg_databases) -> sa.Engine:
    engine = sa.create_engine(crm_url(pg_databases))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE rt_contacts (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, "
            "created_at TIMESTAMPTZ NOT NULL)"
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory, pg_databases, e2e_emulator, crm):
    e2e_emulator.seed(
        scenarios=[{"id": SCENARIOS[HOOK], "name": "Welcome (webhook)", "db_id": 1, "is_active": True}]
    )
    home = tmp_path_factory.mktemp("airflow-rt")
    env = {
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT": e2e_emulator.connection_json(),
        "AIRFLOW_CONN_E2E_CRM": f"postgresql://{pg_databases['crm']}",
        "AIRFLOW_CONN_RT_SECRET": json.dumps({"conn_type": "generic", "password": SECRET}),
        # a stopped triggerer's watchers move to the new one after this many seconds without a heartbeat
        "AIRFLOW__SCHEDULER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
    }
    metadata = f"postgresql+psycopg2://{pg_databases['metadata']}"
    dags = make_dags_folder(home / "dags", SPECS)
    with start_airflow(home, dags, metadata, env, list(SPECS), start_timeout=420) as airflow:
        yield airflow


def launched(emulator, dag_id: str) -> list[str]:
    return [entry["key"] for entry in emulator.journal(SCENARIOS[dag_id])]


def wait_launched(airflow, emulator, dag_id: str, count: int, timeout: float = WAIT) -> list[str]:
    def enough() -> list[str] | None:
        keys = launched(emulator, dag_id)
        return keys if len(keys) >= count else None

    return wait_for(f"{count} launches of {dag_id}", enough, timeout, check=airflow.stack.check_alive)


def hook_url(airflow) -> str:
    return f"{airflow.api_url}/altcraft-webhooks/{HOOK}"


def post(url: str, body: bytes, secret: str = SECRET) -> int:
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body)}
    headers["Content-Type"] = "application/json"
    for attempt in range(3):
        try:
            return requests.post(url, data=body, headers=headers, timeout=60).status_code
        except requests.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def contact(index: int) -> bytes:
    return json.dumps({"email": f"hook{index}@example.com", "first_name": f"H{index}"}).encode()


# ------------------------------------------------------------------------------------------- poll


def event_state(pg_databases: dict[str, str], dag_id: str, key: str) -> Any:
    """A value of the pipeline's event asset state store (metadata database), decoded; None if unset."""
    engine = sa.create_engine(f"postgresql+psycopg2://{pg_databases['metadata']}")
    try:
        with engine.connect() as conn:
            value = conn.scalar(
                sa.text(
                    "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
                    "WHERE a.uri = :uri AND s.key = :key"
                ),
                {"uri": f"altcraft-pipeline://{dag_id}/events", "key": key},
            )
    finally:
        engine.dispose()
    return None if value is None else json.loads(value)


def watermark(pg_databases: dict[str, str], dag_id: str) -> datetime | None:
    """The pipeline's event watermark: where its next event run starts reading."""
    value = event_state(pg_databases, dag_id, WATERMARK_KEY)
    return None if value is None else datetime.fromisoformat(value)


def idle(airflow, dag_id: str) -> bool:
    """No run of the pipeline is queued or running."""
    return all(run["state"] not in ("queued", "running") for run in airflow.api.runs(dag_id))


def poll_settled(airflow, pg_databases: dict[str, str]) -> bool:
    """The poll pipeline has handled every row, so nothing is left to fire for: its watermark is past the
    newest row (a successful event run read them all) and no run is queued or running."""
    mark = watermark(pg_databases, POLL)
    return mark is not None and mark > latest_row(pg_databases) and idle(airflow, POLL)


@pytest.fixture(scope="module")
def polled(local_airflow, e2e_emulator, crm, pg_databases) -> dict[str, Any]:
    """Rows of the first scheduled interval, then rows inserted while the pipeline is idle."""
    dag = local_airflow.api.dag(POLL)
    start, end = (
        datetime.fromisoformat(dag[f"next_dagrun_data_interval_{side}"].replace("Z", "+00:00"))
        for side in ("start", "end")
    )
    old = insert(crm, 1, 3, start + (end - start) / 2)
    local_airflow.api.unpause(POLL)
    wait_launched(local_airflow, e2e_emulator, POLL, len(old))  # the scheduled run of that interval
    wait_for(
        "the watcher's first poll",
        lambda: watermark(pg_databases, POLL),
        60,
        check=local_airflow.stack.check_alive,
    )
    wait_for(
        "the pipeline idle", lambda: idle(local_airflow, POLL), WAIT, check=local_airflow.stack.check_alive
    )
    inserted_at = time.monotonic()
    new = insert(crm, 100, 5, datetime.now(UTC))
    keys = wait_launched(local_airflow, e2e_emulator, POLL, len(old) + len(new))
    return {"old": old, "new": new, "latency": time.monotonic() - inserted_at, "keys": keys}


def launch_runs(pg_databases: dict[str, str], dag_id: str) -> list[tuple[str, str]]:
    """``(source key, run id)`` of every launch the ledger recorded for the pipeline."""
    engine = sa.create_engine(crm_url(pg_databases))
    try:
        with engine.connect() as conn:
            query = "SELECT source_key, run_id FROM altcraft_outcomes WHERE dag_id = :d AND outcome = :o"
            return [tuple(row) for row in conn.execute(sa.text(query), {"d": dag_id, "o": "launched"})]
    finally:
        engine.dispose()


def test_rows_inserted_while_idle_are_launched_once_without_waiting_for_the_schedule(
    polled, local_airflow, e2e_emulator, pg_databases
):
    # launched by event runs: the next scheduled run is up to an hour away (the bench measures how fast)
    runs_of = dict(launch_runs(pg_databases, POLL))
    assert {runs_of[str(i)].split("__")[0] for i in range(100, 105)} == {"asset_triggered"}, runs_of
    assert {runs_of[str(i)].split("__")[0] for i in range(1, 4)} == {"scheduled"}, runs_of
    # nothing is left to fire for (every row behind the watermark, no run queued): nobody launched twice
    wait_settled(local_airflow, pg_databases, POLL)
    keys = launched(e2e_emulator, POLL)
    assert sorted(keys) == sorted(polled["old"] + polled["new"])
    runs = local_airflow.api.runs(POLL)
    kinds = Counter(run["run_type"] for run in runs)
    assert kinds["asset_triggered"] >= 1 and kinds["scheduled"] >= 1, kinds
    # the event run read the scheduled run's rows too (2 day lookback): the ledger skipped them
    assert all(run["state"] == "success" for run in runs if run["state"] in ("success", "failed")), runs


HELD_SECONDS = 50  # the first run's launch request is answered this late (the hook waits up to 60 s)


@pytest.fixture(scope="module")
def overlapping(polled, local_airflow, e2e_emulator, crm, pg_databases) -> dict[str, Any]:
    """Rows inserted while an event run is still sending: its launch request is held by the emulator."""
    e2e_emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "latency",
            "latency_ms": HELD_SECONDS * 1000,
            "count": 1,
        }
    )
    held = insert(crm, 200, 3, datetime.now(UTC))

    def holding() -> bool:
        return any(rule["hits"] for rule in e2e_emulator.state()["faults"])

    wait_for("the first run's request to be held", holding, WAIT, check=local_airflow.stack.check_alive)
    held_since = time.monotonic()
    late = insert(crm, 300, 3, datetime.now(UTC))

    def late_launched() -> list[str] | None:
        keys = launched(e2e_emulator, POLL)
        return keys if set(late) <= set(keys) else None

    while_held = wait_for(
        "the late rows' launches", late_launched, WAIT, check=local_airflow.stack.check_alive
    )
    late_seconds = time.monotonic() - held_since
    total = len(polled["keys"]) + len(held) + len(late)
    keys = wait_launched(local_airflow, e2e_emulator, POLL, total)
    return {"held": held, "late": late, "while_held": while_held, "late_seconds": late_seconds, "keys": keys}


def test_rows_arriving_during_an_active_run_are_launched_before_it_ends_and_once(
    overlapping, polled, local_airflow, e2e_emulator, pg_databases
):
    # the late rows were launched while the first run's request was still held: not after that run
    assert not set(overlapping["held"]) & set(overlapping["while_held"])
    assert overlapping["late_seconds"] < HELD_SECONDS
    runs_of = dict(launch_runs(pg_databases, POLL))
    held_run = {runs_of[str(i)] for i in range(200, 203)}
    late_runs = {runs_of[str(i)] for i in range(300, 303)}
    assert len(held_run) == 1 and not held_run & late_runs, runs_of
    # the event watermark caught up with every row once the runs were over, and nothing is left to fire for
    wait_settled(local_airflow, pg_databases, POLL)
    # the overlapping run left the held rows to the first run, which launched them: once each
    keys = launched(e2e_emulator, POLL)
    assert sorted(keys) == sorted(polled["old"] + polled["new"] + overlapping["held"] + overlapping["late"])
    runs = local_airflow.api.runs(POLL)
    assert all(run["state"] == "success" for run in runs if run["state"] in ("success", "failed")), runs


def latest_row(pg_databases: dict[str, str]) -> datetime:
    engine = sa.create_engine(crm_url(pg_databases))
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text("SELECT max(created_at) FROM rt_contacts"))
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------- webhook


@pytest.fixture(scope="module")
def burst(local_airflow, e2e_emulator, overlapping) -> dict[str, Any]:
    """1,000 webhooks from 16 senders; the triggerer is restarted after the first half."""
    local_airflow.api.unpause(HOOK)
    url = hook_url(local_airflow)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        first = list(pool.map(lambda i: post(url, contact(i)), range(BURST // 2)))
        stack = local_airflow.stack
        os.killpg(stack.processes["triggerer"].popen.pid, signal.SIGTERM)
        stack.processes["triggerer"].popen.wait(60)
        second = list(pool.map(lambda i: post(url, contact(i)), range(BURST // 2, BURST)))
        stack.start("triggerer", airflow_command("triggerer"))
    sent = time.monotonic() - started
    assert Counter(first + second) == {200: BURST}  # fail fast: nothing to wait for otherwise
    keys = wait_launched(local_airflow, e2e_emulator, HOOK, BURST, timeout=WAIT)
    return {"codes": Counter(first + second), "sent_seconds": sent, "keys": keys}


def newest_delivery(pg_databases: dict[str, str], pipeline: str) -> int | None:
    engine = sa.create_engine(crm_url(pg_databases))
    try:
        with engine.connect() as conn:
            query = "SELECT max(id) FROM altcraft_webhook_deliveries WHERE pipeline = :p"
            return conn.scalar(sa.text(query), {"p": pipeline})
    finally:
        engine.dispose()


def hook_settled(airflow, pg_databases: dict[str, str]) -> bool:
    """The webhook pipeline has handled every stored delivery, so nothing is left to fire for: its
    position is the newest delivery and no run is queued or running."""
    positions = event_state(pg_databases, HOOK, POSITIONS_KEY) or {}
    newest = newest_delivery(pg_databases, HOOK)
    return newest is not None and max(positions.values(), default=-1) >= newest and idle(airflow, HOOK)


def wait_settled(airflow, pg_databases: dict[str, str], dag_id: str) -> None:
    """Until the pipeline is settled (`poll_settled`, `hook_settled`): what proves that no launch is still
    to come, where a pause would only make one less likely."""
    settled = poll_settled if dag_id == POLL else hook_settled
    wait_for(
        f"{dag_id} to settle", lambda: settled(airflow, pg_databases), WAIT, check=airflow.stack.check_alive
    )


def test_a_burst_of_1000_webhooks_launches_each_once_in_few_runs(
    burst, local_airflow, e2e_emulator, pg_databases
):
    assert burst["codes"] == {200: BURST}
    wait_settled(local_airflow, pg_databases, HOOK)  # nothing left to fire for: nobody launched twice
    keys = launched(e2e_emulator, HOOK)
    assert len(keys) == BURST and len(set(keys)) == BURST
    assert set(keys) == {f"hook{i}@example.com" for i in range(BURST)}
    runs = local_airflow.api.runs(HOOK)
    assert 1 <= len(runs) <= 25, len(runs)  # coalesced: not one run per webhook
    assert all(run["run_type"] == "asset_triggered" for run in runs)


def test_a_replayed_webhook_is_accepted_once_and_a_forged_one_is_stored_nowhere(
    burst, local_airflow, e2e_emulator, pg_databases
):
    store = WebhookStore(sa.create_engine(crm_url(pg_databases)))
    stored = store.count(HOOK)
    assert stored == BURST
    url = hook_url(local_airflow)
    replay = requests.post(url, data=contact(7), headers=_signed(contact(7)), timeout=30)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    forged = contact(BURST + 1)
    assert post(url, forged, secret="not the secret") == 401
    unsigned = requests.post(url, data=forged, headers={"Content-Type": "application/json"}, timeout=30)
    assert unsigned.status_code == 401
    assert store.count(HOOK) == stored
    wait_settled(local_airflow, pg_databases, HOOK)
    keys = launched(e2e_emulator, HOOK)
    assert len(keys) == BURST and f"hook{BURST + 1}@example.com" not in keys


def _signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)}
