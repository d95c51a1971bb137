"""``make celery-demo``: a 7-day backfill on CeleryExecutor, two workers, 100,000 contacts in PostgreSQL.

Everything is fresh and removed afterwards: two PostgreSQL databases (Airflow's metadata, also the Celery
result backend; the CRM with the sync ledger), a Celery queue of its own on the local Redis (database
`REDIS_DB`), an emulator and an Airflow home in a temporary folder. Airflow runs the scheduler, DAG
processor and API server, and two Celery workers (``celery-a``, ``celery-b``) as separate processes.
A pipeline of 4 partitions with a pool per Altcraft platform is backfilled over the last 7 days; then
what each worker ran and what the emulator recorded are printed.

``tests/e2e/test_celery.py`` and ``bench/celery.py`` run the same deployment (`CeleryDeployment`).
Environment: ``CELERY_DEMO_N`` (contacts, default 100,000), ``CELERY_DEMO_WORKERS`` (1 or 2, default 2),
``REDIS_URL`` (default redis://127.0.0.1:6379); a count that does not fit stops the demo at once with
status 2, naming the variable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from altcraft.testing import EmulatorClient, emulator_process
from demo.airflow_env import REPO, LocalAirflow, celery_settings, free_port
from demo.seed_crm import Contact, sample_contacts, write_contacts
from demo.settings import SettingError, whole

PG_SERVER = "postgres@127.0.0.1:5432"
#: Redis database of this project's Celery broker: runs share it, each with a queue of its own.
REDIS_DB = 5
DAYS = 7
PARTITIONS = 4
LAUNCH = "import_and_launch"
CRM_CONN = "celery_crm"
#: One pool per Altcraft platform (account): its slots cap the concurrent requests of every pipeline that
#: sends to that platform, across all workers (docs/scaling.md#pools-one-per-altcraft-platform).
PLATFORM_POOL = "altcraft_emulator"
POOL_SLOTS = 4
LOADER = REPO / "dags" / "altcraft_pipelines.py"
WORKERS = ("celery-a", "celery-b")
MAX_CONTACTS = 10_000_000


def pipeline_spec(dag_id: str, scenario_id: int, **extra: Any) -> dict[str, Any]:
    """A pipeline over the CRM's ``contacts`` on PostgreSQL, 4 partitions, the platform's pool."""
    return {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": date(2024, 1, 1),
        "retries": 0,
        "source": {
            "type": "sql_table",
            "conn_id": CRM_CONN,
            "table": "contacts",
            "key_column": "id",
            "created_at_column": "created_at",
        },
        "mapping": {
            "matching": "email",
            "key": {"email": "email"},
            "fields": {
                "_fname": "first_name",
                "CRM_ID": {"source": "id", "type": "string"},
                "LOYALTY": {"source": "loyalty", "type": "int"},
            },
        },
        "scenario": {"id": scenario_id, "db_id": 1},
        "delivery": {"mode": "batch", "batch_size": 1000},
        "partitions": PARTITIONS,
        "pool": PLATFORM_POOL,
        "ledger_conn_id": CRM_CONN,
        "max_rejected_ratio": 0.5,
        **extra,
    }


def backfill_dates(today: datetime | None = None, days: int = DAYS) -> list[datetime]:
    """Logical dates of the ``days`` whole UTC days before today, oldest first."""
    today = (today or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=back) for back in range(days, 0, -1)]


def seed_contacts(crm: str, n: int, days: int = DAYS) -> list[Contact]:
    """``n`` contacts over the ``days`` before today in the CRM: every 40th broken, every 97th returning."""
    rows = sample_contacts(end=datetime.now(UTC), days=days, per_day=n // days, duplicate_every=97)
    write_contacts(f"postgresql+psycopg2://{crm}", rows)
    return rows


def valid_emails(contacts: Sequence[Contact]) -> set[str]:
    return {c.email for c in contacts if c.problem is None and c.email}


# ------------------------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def fresh_databases(prefix: str = "altcraft_celery") -> Generator[dict[str, str]]:
    """Fresh PostgreSQL databases ``metadata`` and ``crm`` (as ``user@host:port/name``), dropped after."""
    base = f"{prefix}_{uuid.uuid4().hex[:10]}"
    names = {"metadata": base, "crm": f"{base}_crm"}
    _pg_admin("CREATE DATABASE {}", names.values())
    try:
        yield {role: f"{PG_SERVER}/{name}" for role, name in names.items()}
    finally:
        _pg_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", names.values())


def _pg_admin(statement: str, databases: Any) -> None:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            for name in databases:
                cursor.execute(statement.format(name))
    finally:
        conn.close()


def redis_broker(base: str | None = None, db: int = REDIS_DB) -> str:
    base = (base or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379").rstrip("/")
    return f"{base}/{db}"


def check_broker(url: str) -> None:
    """RuntimeError naming the broker when it does not answer (workers would wait for it forever)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        raise RuntimeError(f"the Celery broker {url} does not answer ({error}); set REDIS_URL") from error


def forget_queue(brokers: Sequence[str], queue: str) -> None:
    """Remove a finished deployment's queue from shared brokers: its list, binding and unacked messages.

    A SIGKILLed worker leaves its message unacknowledged; Celery would requeue it a day later.
    """
    import redis

    for url in brokers:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            client.delete(queue, f"_kombu.binding.{queue}")
            for tag, payload in client.hscan_iter("unacked"):
                if queue.encode() in payload:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)


@dataclass
class CeleryDeployment:
    """Airflow on CeleryExecutor: home, DAG folder of pipeline specs, fresh databases, broker, emulator.

    ``queue`` is this deployment's own Celery queue, so that runs sharing a Redis database never take
    each other's tasks. A context manager: every process it started is stopped on exit.
    """

    home: Path
    databases: dict[str, str]
    emulator: EmulatorClient
    specs: dict[str, dict[str, Any]]
    broker_url: str = field(default_factory=redis_broker)
    queue: str = field(default_factory=lambda: f"altcraft-{uuid.uuid4().hex[:10]}")
    airflow: LocalAirflow = field(init=False)
    used_brokers: list[str] = field(init=False)

    def __post_init__(self) -> None:
        dags = self.home / "dags"
        (dags / "pipelines").mkdir(parents=True, exist_ok=True)
        (dags / LOADER.name).write_bytes(LOADER.read_bytes())
        for name, spec in self.specs.items():
            (dags / "pipelines" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        self.airflow = LocalAirflow(
            home=self.home,
            sql_alchemy_conn=f"postgresql+psycopg2://{self.databases['metadata']}",
            dags_folder=dags,
            api_port=free_port(),
            extra_env=self.settings(self.broker_url),
        )
        self.airflow.api.timeout = 120
        self.used_brokers = [self.broker_url]

    def settings(self, broker_url: str) -> dict[str, str]:
        result_backend = f"db+postgresql+psycopg2://{self.databases['metadata']}"
        return {
            **celery_settings(broker_url, result_backend, self.queue),
            # Every component shares this machine's cores: give a busy API server time to answer tasks.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW_CONN_ALTCRAFT_DEFAULT": self.emulator.connection_json(),
            f"AIRFLOW_CONN_{CRM_CONN.upper()}": f"postgresql://{self.databases['crm']}",
        }

    def __enter__(self) -> CeleryDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        stack = self.airflow.stack
        for name in [name for name in stack.processes if name in WORKERS]:
            stack.kill(name)  # with the task runners, which live in process groups of their own
        stack.stop()
        forget_queue(self.used_brokers, self.queue)

    def start(
        self,
        workers: Sequence[str] = WORKERS,
        *,
        concurrency: int | None = None,
        pool_slots: int = POOL_SLOTS,
    ) -> None:
        """Migrate, start scheduler, DAG processor, API server and the workers; pool; wait for the DAGs."""
        check_broker(self.broker_url)
        self.airflow.migrate()
        self.airflow.start("scheduler", "dag-processor", "api-server")
        self.set_pool(PLATFORM_POOL, pool_slots)
        for name in workers:
            self.airflow.start_celery_worker(name, queue=self.queue, concurrency=concurrency)
        self.airflow.wait_for_dags(*self.specs, timeout=180)

    def set_pool(self, name: str, slots: int) -> None:
        description = "concurrent requests to this Altcraft platform, across all workers"
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        if self.airflow.api.get("pools", pool_name_pattern=name)["total_entries"]:
            self.airflow.api.request("PATCH", f"pools/{name}", json={"slots": slots})
        else:
            self.airflow.api.request("POST", "pools", json=body)

    def switch_broker(self, broker_url: str, workers: Sequence[str] = WORKERS) -> None:
        """Stop scheduler and workers, then start them again on another broker (the rest keeps running)."""
        stack = self.airflow.stack
        for name in ("scheduler", *[w for w in workers if w in stack.processes]):
            stack.terminate(name)
        self.broker_url = broker_url
        self.used_brokers.append(broker_url)
        self.airflow.env.update(self.settings(broker_url))
        stack.env = self.airflow.env
        stack.start_airflow("scheduler")
        for name in workers:
            self.airflow.start_celery_worker(name, queue=self.queue)

    def backfill(self, dag_id: str, dates: Sequence[datetime]) -> None:
        self.airflow.backfill(dag_id, dates[0], dates[-1])
        self.airflow.api.unpause(dag_id)

    def wait(self, dag_id: str, dates: Sequence[datetime], timeout: float) -> list[dict[str, Any]]:
        return self.airflow.wait_for_runs(dag_id, dates, timeout)

    def launch_tasks(self, dag_id: str, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every ``import_and_launch`` task instance (one per partition) of these runs."""
        return [
            ti for run in runs for ti in self.airflow.api.task_instances(dag_id, run["dag_run_id"], LAUNCH)
        ]

    def summary(self, dag_id: str, runs: Sequence[dict[str, Any]]) -> dict[str, int]:
        total: Counter[str] = Counter()
        for run in runs:
            total.update(self.airflow.api.run_summary(dag_id, run["dag_run_id"], LAUNCH))
        return dict(total)


def task_span(instances: Sequence[dict[str, Any]]) -> float:
    """Seconds from the first task instance's start to the last one's end."""
    starts = [_time(ti["start_date"]) for ti in instances]
    ends = [_time(ti["end_date"]) for ti in instances]
    return (max(ends) - min(starts)).total_seconds()


def max_overlap(instances: Sequence[dict[str, Any]]) -> int:
    """The most task instances running at the same moment (from their start and end times)."""
    events = sorted(
        [(_time(ti["start_date"]), 1) for ti in instances]
        + [(_time(ti["end_date"]), -1) for ti in instances],
        key=lambda event: (event[0], event[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------- demo

DEMO_DAG = "celery_welcome"
DEMO_SCENARIO = 31


def main() -> int:
    try:
        n = whole(os.environ, "CELERY_DEMO_N", 100_000, 1, MAX_CONTACTS)
        workers = WORKERS[: whole(os.environ, "CELERY_DEMO_WORKERS", len(WORKERS), 1, len(WORKERS))]
    except SettingError as error:
        print(f"make celery-demo: {error}", file=sys.stderr)
        return 2
    dates = backfill_dates()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="altcraft-celery-") as home,
        fresh_databases() as databases,
        emulator_process() as emulator,
    ):
        step(f"Seeding {n:,} contacts over {DAYS} days into a fresh PostgreSQL CRM")
        contacts = seed_contacts(databases["crm"], n)
        emulator.seed(scenarios=[{"id": DEMO_SCENARIO, "name": "Welcome", "db_id": 1, "is_active": True}])
        specs = {DEMO_DAG: pipeline_spec(DEMO_DAG, DEMO_SCENARIO)}
        with CeleryDeployment(Path(home), databases, emulator, specs) as deployment:
            step(
                f"Starting Airflow on CeleryExecutor (broker {deployment.broker_url}, queue "
                f"{deployment.queue}) with workers {', '.join(workers)}"
            )
            try:
                deployment.start(workers)
                step(
                    f"Backfilling {DEMO_DAG}: {DAYS} days x {PARTITIONS} partitions, pool "
                    f"{PLATFORM_POOL} ({POOL_SLOTS} slots)"
                )
                backfill_started = time.monotonic()
                deployment.backfill(DEMO_DAG, dates)
                runs = deployment.wait(DEMO_DAG, dates, timeout=1800)
                wall = time.monotonic() - backfill_started
                report(deployment, runs, contacts, wall)
            except Exception:
                logs = deployment.airflow.stack.logs(30)
                print(f"\nThe demo failed; the end of each component's log:\n{logs}")
                raise
    print(f"\nDone in {time.monotonic() - started:.0f} s (everything it created is removed).")
    return 0


def report(
    deployment: CeleryDeployment, runs: list[dict[str, Any]], contacts: list[Contact], wall: float
) -> None:
    states = Counter(run["state"] for run in runs)
    instances = deployment.launch_tasks(DEMO_DAG, runs)
    by_worker = Counter(ti["hostname"] for ti in instances)
    summary = deployment.summary(DEMO_DAG, runs)
    journal = [entry["key"] for entry in deployment.emulator.journal(DEMO_SCENARIO)]
    span = task_span(instances)
    print(f"\nRuns: {dict(states)}")
    print(
        "Partitions per worker (task instances' hostnames): "
        + ", ".join(f"{host} {count}" for host, count in sorted(by_worker.items()))
    )
    print(f"Most partitions running at once: {max_overlap(instances)} (pool {POOL_SLOTS} slots)")
    print("Delivery: " + ", ".join(f"{name} {count:,}" for name, count in summary.items()))
    print(
        f"Emulator journal: {len(journal):,} launches, {len(set(journal)):,} distinct contacts; "
        f"valid contacts in the CRM: {len(valid_emails(contacts)):,}"
    )
    print(
        f"Throughput: {summary.get('launched', 0) / span:,.0f} contacts/s over the partitions' span "
        f"({span:.0f} s); backfill to last run finished {wall:.0f} s"
    )
    once = set(journal) == valid_emails(contacts) and len(journal) == len(set(journal))
    if states.keys() - {"success"} or not once:
        raise SystemExit("make celery-demo: not every valid contact was launched exactly once")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
