"""End to end on CeleryExecutor: a 7-day backfill of 4 partitions spread over two Celery workers.

The deployment of ``make celery-demo`` (demo/celery_demo.py): fresh PostgreSQL databases (metadata and
Celery results; the CRM with the ledger), the local Redis as broker (a queue of this run's own), the
scheduler, DAG processor and API server, and two workers as separate processes. Then two faults: a
worker SIGKILLed while a batch is in flight (that pipeline writes a launch marker, so its retry
reconciles the batch with Altcraft), and the broker restarted mid-run (a redis-server of this test's
own: the machine's Redis is shared).

``CELERY_E2E_N`` contacts (default 10,000: per-task overhead, not contacts, dominates here);
`make celery-demo` runs the same backfill over the issue's 100,000 contacts (docs/scaling.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from demo.airflow_env import free_port
from demo.celery_demo import (
    DAYS,
    LAUNCH,
    PARTITIONS,
    PLATFORM_POOL,
    WORKERS,
    CeleryDeployment,
    backfill_dates,
    fresh_databases,
    max_overlap,
    pipeline_spec,
    seed_contacts,
    valid_emails,
)
from demo.seed_crm import Contact

from altcraft.operators.import_and_launch import SUMMARY_XCOM_KEY
from altcraft.reconciliation import launch_marker
from altcraft.testing import EmulatorClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

N = int(os.environ.get("CELERY_E2E_N", "10000"))
MAIN, CRASH, RESTART = "celery_backfill", "celery_crash", "celery_broker_restart"
SCENARIOS = {MAIN: 51, CRASH: 52, RESTART: 53}
DATES = backfill_dates()
CRASH_DAY = DATES[2]
CRASH_BATCH = 100
#: The crash pipeline's scenario works on a database of its own, with the launch-marker field.
CRASH_DB = SCENARIOS[CRASH]
MARKER = "AF_SYNC"
RESTART_DATES = DATES[5:]
#: Two pool slots for four worker slots (2 workers x concurrency 2): the pool, not the workers, is the cap.
POOL_SLOTS = 2
WAIT = 600  # seconds for a round of runs, on a machine that other work may keep busy


def _single_interval(day: datetime) -> dict[str, Any]:
    """A start and end date giving the pipeline one interval only: unpausing it schedules nothing else."""
    return {"start_date": day.date(), "end_date": day + timedelta(days=1)}


SPECS = {
    MAIN: pipeline_spec(MAIN, SCENARIOS[MAIN]),
    CRASH: pipeline_spec(
        CRASH,
        SCENARIOS[CRASH],
        scenario={"id": SCENARIOS[CRASH], "db_id": CRASH_DB, "launch_marker_field": MARKER},
        partitions=1,
        delivery={"mode": "batch", "batch_size": CRASH_BATCH},
        retries=1,
        retry_delay="1s",
        **_single_interval(CRASH_DAY),
    ),
    # A task the scheduler hands to Celery while the broker is down fails to publish ("Error sending Celery
    # workload ... Connection refused") and its try fails without starting: the retries (a spec's default
    # is 2) run it once the broker is back.
    RESTART: pipeline_spec(
        RESTART,
        SCENARIOS[RESTART],
        delivery={"mode": "batch", "batch_size": 200},
        retries=2,
        retry_delay="2s",
    ),
}


# ------------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    with fresh_databases("altcraft_e2e_celery") as names:
        yield names


@pytest.fixture(scope="module")
def contacts(databases) -> list[Contact]:
    return seed_contacts(databases["crm"], N)


@pytest.fixture(scope="module")
def emulator(altcraft_module_emulator: EmulatorClient) -> EmulatorClient:
    fields = [
        {"name": "CRM_ID", "type": "string"},
        {"name": "LOYALTY", "type": "int"},
        {"name": MARKER, "type": "string"},
    ]
    altcraft_module_emulator.seed(
        databases=[{"id": CRASH_DB, "name": "Customers with a launch marker", "fields": fields}],
        scenarios=[
            {"id": scenario, "name": dag_id, "db_id": CRASH_DB if dag_id == CRASH else 1, "is_active": True}
            for dag_id, scenario in SCENARIOS.items()
        ],
    )
    return altcraft_module_emulator


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, databases, emulator, contacts) -> Iterator[CeleryDeployment]:
    home = tmp_path_factory.mktemp("airflow-celery")
    with CeleryDeployment(home, databases, emulator, SPECS) as deployment:
        try:
            deployment.start(WORKERS, pool_slots=POOL_SLOTS)
        except Exception as error:
            raise RuntimeError(
                f"Airflow did not start: {error}\n{deployment.airflow.stack.logs()}"
            ) from error
        yield deployment


@pytest.fixture(scope="module")
def backfilled(deployment) -> dict[str, Any]:
    deployment.backfill(MAIN, DATES)
    runs = deployment.wait(MAIN, DATES, WAIT)
    return {"runs": runs, "instances": deployment.launch_tasks(MAIN, runs)}


def crm_query(databases: dict[str, str], query: str, **params: Any) -> list[sa.Row]:
    engine = sa.create_engine(f"postgresql+psycopg2://{databases['crm']}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))
    finally:
        engine.dispose()


def outcomes(databases: dict[str, str], dag_id: str) -> list[sa.Row]:
    query = "SELECT outcome, source_key, try_number, reason FROM altcraft_outcomes WHERE dag_id = :dag_id"
    return crm_query(databases, query, dag_id=dag_id)


def contact_statuses(databases: dict[str, str], dag_id: str) -> Counter[str]:
    """The ledger's contacts of the pipeline's scenario, by status."""
    query = "SELECT status FROM altcraft_contacts WHERE scenario_id = :scenario"
    return Counter(row.status for row in crm_query(databases, query, scenario=SCENARIOS[dag_id]))


def launched(emulator: EmulatorClient, dag_id: str) -> list[str]:
    return [entry["key"] for entry in emulator.journal(SCENARIOS[dag_id])]


def on_days(contacts: list[Contact], days: list[datetime]) -> list[Contact]:
    return [c for c in contacts if any(day <= c.created_at < day + timedelta(days=1) for day in days)]


# ------------------------------------------------------------------------- the 2-worker backfill


def test_every_valid_contact_is_launched_exactly_once(backfilled, emulator, contacts):
    assert [run["state"] for run in backfilled["runs"]] == ["success"] * DAYS
    keys = launched(emulator, MAIN)
    assert len(keys) == len(set(keys)), "nobody launched twice"
    assert set(keys) == valid_emails(contacts)


def test_partitions_run_on_both_workers_from_the_deployments_queue(backfilled, deployment):
    instances = backfilled["instances"]
    assert len(instances) == DAYS * PARTITIONS
    assert {ti["state"] for ti in instances} == {"success"}
    per_worker = Counter(ti["hostname"] for ti in instances)
    assert set(per_worker) == set(WORKERS), per_worker
    assert {ti["queue"] for ti in instances} == {deployment.queue}


def test_the_ledger_on_postgresql_records_every_contact(backfilled, databases, contacts):
    counts = Counter(row.outcome for row in outcomes(databases, MAIN))
    assert counts == {
        "launched": len(valid_emails(contacts)),
        "skipped": sum(c.duplicate_of is not None for c in contacts),  # returning emails
        "rejected": sum(c.problem is not None for c in contacts),
    }


def test_the_platform_pool_caps_concurrent_launches_across_workers(backfilled):
    instances = backfilled["instances"]
    assert {ti["pool"] for ti in instances} == {PLATFORM_POOL}
    # Four worker slots could run four partitions at once; the pool lets two run, and two did.
    assert max_overlap(instances) == POOL_SLOTS


# ------------------------------------------------------------------------------- a killed worker


@pytest.fixture(scope="module")
def killed_worker(backfilled, deployment, emulator) -> dict[str, Any]:
    """The worker running the crash pipeline SIGKILLed (its whole process group) mid-batch."""
    emulator.clear_faults()
    # the third request is held for 6 s; the emulator then processes it, although its client is gone
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "latency",
            "latency_ms": 6000,
            "every": 3,
            "count": 1,
        }
    )
    deployment.backfill(CRASH, [CRASH_DAY])
    deadline = time.monotonic() + WAIT
    while emulator.state()["faults"][0]["hits"] < 1:
        assert time.monotonic() < deadline, "the crash pipeline never sent its third batch"
        time.sleep(0.1)
    [run] = deployment.airflow.api.runs(CRASH)
    [ti] = deployment.launch_tasks(CRASH, [run])
    victim = ti["hostname"]
    deployment.airflow.stack.kill(victim)
    finished = deployment.wait(CRASH, [CRASH_DAY], WAIT)
    api = deployment.airflow.api
    tries = api.get(f"dags/{CRASH}/dagRuns/{run['dag_run_id']}/taskInstances/{LAUNCH}/0/tries")
    return {
        "run": finished[0],
        "victim": victim,
        "tries": tries["task_instances"],
        # the last try's summary, published whether the try succeeded or not
        "summary": api.xcom(CRASH, run["dag_run_id"], LAUNCH, map_index=0, key=SUMMARY_XCOM_KEY),
        "run_key": f"{CRASH}/{LAUNCH}[0]/{run['dag_run_id']}",
    }


def requests_of(emulator: EmulatorClient, dag_id: str) -> list[list[str]]:
    """The keys each launch request of the pipeline's scenario carried, in the order they were processed."""
    requests: dict[str, list[str]] = {}
    for entry in emulator.journal(SCENARIOS[dag_id]):
        requests.setdefault(entry["request_id"], []).append(entry["key"])
    return list(requests.values())


def test_a_killed_workers_task_is_retried_on_the_other_worker(killed_worker):
    # Try 2 reconciles the batch in flight when the worker died before claiming it, so the run succeeds.
    assert killed_worker["run"]["state"] == "success"
    tries = {t["try_number"]: t for t in killed_worker["tries"]}
    assert sorted(tries) == [1, 2]
    assert tries[1]["hostname"] == killed_worker["victim"]
    assert tries[1]["state"] == "failed"  # no heartbeat from the dead worker
    assert tries[2]["hostname"] in set(WORKERS) - {killed_worker["victim"]}
    assert tries[2]["state"] == "success"


def test_the_in_flight_batch_is_recorded_uncertain_then_reconciled_by_the_retry(
    killed_worker, emulator, databases, contacts
):
    """Try 2 records try 1's unanswered batch as uncertain, then reads it back: the marker proves it."""
    summary = killed_worker["summary"]
    assert summary["earlier_tries"]["uncertain"] == CRASH_BATCH, "try 1's batch in flight, recorded uncertain"
    assert summary["reconciled"] == {
        "launched": CRASH_BATCH,
        "not_processed": 0,
        "uncertain": 0,
        "deferred": 0,
    }
    assert (summary["uncertain"], summary["scope"]) == (0, {"uncertain": 0, "failed": 0, "stale_sending": 0})

    requests = requests_of(emulator, CRASH)
    held = set(requests[2])  # the third request, processed after its client was killed
    assert len(held) == CRASH_BATCH
    email_of = {str(c.id): c.email for c in contacts}
    rows = outcomes(databases, CRASH)
    reconciled = [
        (email_of[row.source_key], row.outcome)
        for row in rows
        if row.try_number == 1 and "launch marker" in (row.reason or "")
    ]
    assert sorted(reconciled) == sorted((key, "launched") for key in held), "the held batch, proven launched"

    # The proof: those profiles carry try 1's marker, written by the request that launched them.
    _, _, try_1 = launch_marker(MARKER, killed_worker["run_key"], 1).partition("=")
    _, _, try_2 = launch_marker(MARKER, killed_worker["run_key"], 2).partition("=")
    marker_of = {p["id"]: p["fields"].get(MARKER) for p in emulator.profiles(db_id=CRASH_DB)}
    carried = {entry["key"]: marker_of[entry["profile_id"]] for entry in emulator.journal(SCENARIOS[CRASH])}
    by_try_1 = {key for request in requests[:3] for key in request}
    assert carried == {key: try_1 if key in by_try_1 else try_2 for key in carried}


def test_a_killed_worker_launches_everyone_exactly_once(killed_worker, emulator, databases, contacts):
    expected = valid_emails(on_days(contacts, [CRASH_DAY]))
    assert sorted(launched(emulator, CRASH)) == sorted(expected), "every valid contact once, nobody twice"

    requests = requests_of(emulator, CRASH)
    email_of = {str(c.id): c.email for c in contacts}
    by_try: dict[int, list[str]] = {1: [], 2: []}
    for row in outcomes(databases, CRASH):
        if row.outcome == "launched":
            by_try[row.try_number].append(email_of[row.source_key])
    sent_by_try_1 = [key for request in requests[:3] for key in request]
    assert sorted(by_try[1]) == sorted(sent_by_try_1), "try 1's three requests, the held one reconciled"
    assert sorted(by_try[2]) == sorted(expected - set(sent_by_try_1)), "try 2 sent the rest, once"
    assert contact_statuses(databases, CRASH) == {"launched": len(expected)}


# -------------------------------------------------------------------------- the broker restarted


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A redis-server of this test (append-only file, so a restart keeps the queues), restartable."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    command += ["--appendonly", "yes", "--save", ""]
    state: dict[str, Any] = {"port": port, "process": None}

    def start() -> None:
        log = (folder / "redis.log").open("ab")
        state["process"] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop() -> None:
        state["process"].send_signal(signal.SIGTERM)  # a clean shutdown: the append-only file is synced
        state["process"].wait(timeout=30)

    state["start"], state["stop"] = start, stop
    start()
    try:
        yield state
    finally:
        if state["process"].poll() is None:
            state["process"].kill()
            state["process"].wait()


@pytest.fixture(scope="module")
def broker_restarted(killed_worker, deployment, own_redis, emulator) -> dict[str, Any]:
    """Scheduler and both workers moved to our redis-server; it is restarted while the backfill runs."""
    emulator.clear_faults()
    deployment.switch_broker(f"redis://127.0.0.1:{own_redis['port']}/0")
    deployment.backfill(RESTART, RESTART_DATES)
    api = deployment.airflow.api
    deadline = time.monotonic() + WAIT
    while True:  # mid-run: some partitions done, the others not yet started
        runs = [run for run in api.runs(RESTART) if run["run_type"] == "backfill"]
        states = Counter(ti["state"] for ti in deployment.launch_tasks(RESTART, runs))
        if states["success"]:
            break
        assert time.monotonic() < deadline, f"no partition finished: {states}"
        time.sleep(0.5)
    own_redis["stop"]()
    stopped = datetime.now().astimezone()
    time.sleep(3)
    own_redis["start"]()
    runs = deployment.wait(RESTART, RESTART_DATES, WAIT)
    return {"runs": runs, "instances": deployment.launch_tasks(RESTART, runs), "stopped": stopped}


def test_a_broker_restart_mid_run_loses_no_partition_and_launches_nobody_twice(
    broker_restarted, emulator, contacts
):
    assert {run["state"] for run in broker_restarted["runs"]} == {"success"}
    instances = broker_restarted["instances"]
    assert len(instances) == len(RESTART_DATES) * PARTITIONS
    assert {ti["state"] for ti in instances} == {"success"}
    after = [ti for ti in instances if _time(ti["start_date"]) > broker_restarted["stopped"]]
    assert after, "some partitions were queued through the restarted broker"
    keys = launched(emulator, RESTART)
    assert len(keys) == len(set(keys)), "nobody launched twice"
    assert set(keys) == valid_emails(on_days(contacts, RESTART_DATES))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
