"""``make bench`` (part): how fast the Altcraft page answers over a PostgreSQL ledger of 1,000,000 outcomes.

A fresh ledger database gets ``BENCH_UI_ROWS`` outcome rows (default 1,000,000: 4 pipelines feeding 3
scenarios, one run a day each for 30 days, 2 partitions per run) and one contact row per contact and
scenario; Airflow (metadata in another fresh PostgreSQL database, only the API server running) knows
the 4 DAGs and their latest runs. Each page is then requested over HTTP as a logged-in user, as the
browser does: once cold, then ``BENCH_UI_REPEAT`` times (default 20). Writes ``docs/benchmarks-ui.md``
(``BENCH_UI_OUTPUT``). Starts an Airflow API server: run it under ``flock /tmp/altcraft-e2e.lock``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.common import REPO

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
#: How `make bench` runs this part (the report names it)
COMMAND = "flock /tmp/altcraft-e2e.lock .venv/bin/python -m bench.ui_pages"
TARGET_MS = 300
PLATFORM = "https://bench.altcraft.test"
#: pipeline (DAG) → scenario it feeds: two pipelines share scenario 101
PIPELINES = {
    "bench_welcome_crm": 101,
    "bench_welcome_shop": 101,
    "bench_reactivation": 102,
    "bench_birthday": 103,
}
DAYS = 30
PARTITIONS = 2
DISTINCT_CONTACTS = 250_000
DAG_FILE = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

for dag_id in {dag_ids!r}:
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1)):
        EmptyOperator(task_id="import_and_launch")
"""


def log(message: str) -> None:
    sys.stderr.write(f"[bench-ui {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------------- data


#: Run ids of the seeded runs; the REST API refuses ``scheduled__`` ids for the runs `register_runs` creates.
RUN_PREFIX = "manual__"


def run_id(day: datetime) -> str:
    return f"{RUN_PREFIX}{day.date().isoformat()}T00:00:00+00:00"


@contextmanager
def databases() -> Generator[dict[str, str]]:
    """Two fresh PostgreSQL databases (the ledger, Airflow's metadata); dropped afterwards."""
    import psycopg

    prefix = f"altcraft_bench_ui_{uuid.uuid4().hex[:8]}"
    names = {"ledger": prefix, "metadata": f"{prefix}_meta"}
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        for name in names.values():
            conn.execute(f"CREATE DATABASE {name}")
    try:
        yield {role: f"{PG_SERVER}/{name}" for role, name in names.items()}
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            for name in names.values():
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def seed_ledger(url: str, rows: int, today: datetime) -> dict[str, Any]:
    """The ledger tables (created by the Ledger itself) filled with ``rows`` outcomes; facts about them."""
    import sqlalchemy as sa

    from altcraft.ledger import Ledger

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    Ledger(engine).ensure_schema()
    runs = len(PIPELINES) * DAYS
    dag_ids = list(PIPELINES)
    case_dag = " ".join(f"WHEN {n} THEN '{dag_id}'" for n, dag_id in enumerate(dag_ids))
    case_scenario = " ".join(f"WHEN {n} THEN {PIPELINES[dag_id]}" for n, dag_id in enumerate(dag_ids))
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"""
            WITH g AS (
                SELECT i, i % {runs} AS r, i % {DISTINCT_CONTACTS} AS person, (i / {runs}) % 100 AS roll
                FROM generate_series(0, {rows - 1}) AS i
            ), spread AS (
                SELECT i, person, roll, (r % {len(dag_ids)}) AS d, (r / {len(dag_ids)}) AS back,
                       'email:user' || person || '@example.org' AS contact_key
                FROM g
            )
            INSERT INTO altcraft_outcomes (platform, scenario_id, dag_id, task_id, run_id, window_key,
                try_number, contact_key, contact_hash, source_key, outcome, code, reason, recorded_at)
            SELECT '{PLATFORM}', CASE d {case_scenario} END, CASE d {case_dag} END,
                   'import_and_launch[' || ((i / {runs}) % {PARTITIONS}) || ']',
                   '{RUN_PREFIX}'
                       || to_char(CAST(:today AS timestamp) - back * interval '1 day', 'YYYY-MM-DD')
                       || 'T00:00:00+00:00',
                   'window-' || back, 1,
                   CASE WHEN roll < 95 THEN contact_key END,
                   CASE WHEN roll < 95 THEN encode(sha256(convert_to('{PLATFORM}' || E'\\n'
                       || (CASE d {case_scenario} END) || E'\\n' || contact_key, 'UTF8')), 'hex') END,
                   'row-' || i,
                   CASE WHEN roll < 80 THEN 'launched' WHEN roll < 90 THEN 'skipped'
                        WHEN roll < 95 THEN 'failed' WHEN roll < 97 THEN 'uncertain' ELSE 'rejected' END,
                   CASE WHEN roll BETWEEN 90 AND 94 THEN 400 END,
                   CASE WHEN roll >= 97 THEN 'email: is not a valid email address'
                        WHEN roll >= 90 THEN 'no answer' END,
                   CAST(:now AS timestamp) - back * interval '1 day' - (i % 3600) * interval '1 second'
            FROM spread
            ORDER BY back DESC, d, i  -- the table grows in time order, as the ledger appends it
            """),
            {"today": today.replace(tzinfo=None), "now": (today + timedelta(hours=23)).replace(tzinfo=None)},
        )
        conn.exec_driver_sql(
            """
            INSERT INTO altcraft_contacts (contact_hash, platform, scenario_id, contact_key, status,
                source_key, launch_count, claim_run_key, claim_try_number, batch_id, claimed_at,
                error_text, updated_at)
            SELECT DISTINCT ON (contact_hash) contact_hash, platform, scenario_id, contact_key,
                   CASE WHEN outcome IN ('failed', 'uncertain') THEN outcome ELSE 'launched' END,
                   source_key, 1, dag_id || '/' || task_id || '/' || run_id, 1, 'b', recorded_at, reason,
                   recorded_at
            FROM altcraft_outcomes WHERE contact_hash IS NOT NULL
            ORDER BY contact_hash, id DESC
            """
        )
    seeded = time.monotonic()
    Ledger(engine).recount_days()  # what an existing ledger gets once on upgrade; the ledger keeps it after
    recount_seconds = time.monotonic() - seeded
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE altcraft_outcome_days")
        conn.exec_driver_sql("VACUUM ANALYZE altcraft_outcomes")
        conn.exec_driver_sql("VACUUM ANALYZE altcraft_contacts")
        outcomes = conn.exec_driver_sql("SELECT count(*) FROM altcraft_outcomes").scalar_one()
        contacts = conn.exec_driver_sql("SELECT count(*) FROM altcraft_contacts").scalar_one()
        per_run = conn.exec_driver_sql(
            "SELECT count(*) FROM altcraft_outcomes WHERE dag_id = %s AND run_id = %s",
            (dag_ids[0], run_id(today)),
        ).scalar_one()
        size_sql = "SELECT pg_size_pretty(pg_total_relation_size('altcraft_outcomes'))"
        size = conn.exec_driver_sql(size_sql).scalar_one()
    engine.dispose()
    return {
        "outcomes": outcomes,
        "contacts": contacts,
        "rows_per_run": per_run,
        "outcomes_size": size,
        "seed_seconds": round(time.monotonic() - started, 1),
        "recount_days_seconds": round(recount_seconds, 2),
    }


# ------------------------------------------------------------------------------------------- airflow


def register_runs(airflow: Any, today: datetime) -> None:
    """Each DAG's run of today in Airflow, with the ledger's run id (what the Pipelines page links)."""
    for dag_id in PIPELINES:
        airflow.api.request(
            "POST",
            f"dags/{dag_id}/dagRuns",
            json={
                "dag_run_id": run_id(today),
                "logical_date": today.isoformat(),
                "data_interval_start": today.isoformat(),
                "data_interval_end": (today + timedelta(days=1)).isoformat(),
            },
        )


def timed(call: Callable[[], requests.Response], repeat: int) -> dict[str, Any]:
    def once() -> float:
        started = time.perf_counter()
        answer = call()
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.url}: {answer.status_code} {answer.text[:300]}")
        return elapsed

    cold = once()
    warm = sorted(once() for _ in range(repeat))
    return {
        "cold_ms": round(cold, 1),
        "median_ms": round(statistics.median(warm), 1),
        "p95_ms": round(warm[max(0, round(0.95 * len(warm)) - 1)], 1),
        "max_ms": round(warm[-1], 1),
        "bytes": len(call().content),
    }


def measure(base: str, session: requests.Session, today: datetime, repeat: int) -> dict[str, dict[str, Any]]:
    dag_id = next(iter(PIPELINES))
    run = {"dag_id": dag_id, "run_id": run_id(today)}
    pages: dict[str, Callable[[], requests.Response]] = {
        "Pipelines": lambda: session.get(f"{base}/altcraft/"),
        "Run (first page)": lambda: session.get(f"{base}/altcraft/run", params=run),
        "Run (failed only, page 2)": lambda: session.get(
            f"{base}/altcraft/run", params={**run, "outcome": "failed", "page": 2}
        ),
        "Run (page 100)": lambda: session.get(f"{base}/altcraft/run", params={**run, "page": 100}),
        "Contact search": lambda: session.post(f"{base}/altcraft/contact", data={"q": "User17@Example.org"}),
        "Run CSV export": lambda: session.get(f"{base}/altcraft/run.csv", params=run),
    }
    results = {}
    for name, call in pages.items():
        log(f"measuring {name}")
        results[name] = timed(call, repeat)
    return results


# ------------------------------------------------------------------------------------------- report


def render(facts: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Altcraft page: response times",
        "",
        f"Measured {facts['when']} by `make bench` (`bench/ui_pages.py`) on {facts['machine']}, PostgreSQL "
        f"{facts['postgres']}, Airflow {facts['airflow']} API server (1 worker), over HTTP with a logged-in "
        "user's token, like the browser's requests from the Airflow UI.",
        "",
        f"Ledger: **{facts['outcomes']:,} outcome rows** ({facts['outcomes_size']}), {facts['contacts']:,} "
        f"contact rows; {len(PIPELINES)} pipelines feeding 3 scenarios, one run a day each for {DAYS} days, "
        f"{PARTITIONS} partitions per run ({facts['rows_per_run']:,} outcomes per run). Target: the "
        f"Pipelines and Run pages answer in ≤ {TARGET_MS} ms.",
        "",
        f"| page | cold (ms) | median of {facts['repeat']} (ms) | p95 (ms) | max (ms) | size | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in results.items():
        target = (
            ("met" if row["p95_ms"] <= TARGET_MS else "**missed**")
            if name.startswith(("Pipelines", "Run (")) else "—"
        )  # fmt: skip
        lines.append(
            f"| {name} | {row['cold_ms']} | {row['median_ms']} | {row['p95_ms']} | {row['max_ms']} | "
            f"{row['bytes']:,} B | {target} |"
        )
    lines += [
        "",
        "Cold is the first request after the API server started (the server imports the page, opens the "
        "ledger's connection pool and compiles the templates in the background when it starts serving, see "
        "docs/ui.md). The Pipelines page keeps nothing between views: each reads the 30 days' counts from "
        "`altcraft_outcome_days` and counts the last 24 hours' outcome rows. Filling `altcraft_outcome_days` "
        "from the "
        f"{facts['outcomes']:,} seeded rows (what an existing ledger gets once on upgrade) took "
        f"{facts['recount_days_seconds']} s. The machine was shared with other jobs (load average "
        f"{facts['load']} before measuring, {facts['load_after']} after); figures are wall-clock times "
        "seen by the client. Contact search and the CSV export (a whole run) have no target and are shown "
        "for reference.",
        "",
        f"Command: `{COMMAND}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    from airflow import __version__ as airflow_version
    from demo.airflow_env import LocalAirflow, free_port

    rows = int(os.environ.get("BENCH_UI_ROWS", "1000000"))
    repeat = int(os.environ.get("BENCH_UI_REPEAT", "20"))
    output = Path(os.environ.get("BENCH_UI_OUTPUT", REPO / "docs" / "benchmarks-ui.md"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with databases() as urls, tempfile.TemporaryDirectory(prefix="altcraft-bench-ui-") as tmp:
        log(f"seeding {rows:,} outcomes")
        facts = seed_ledger(urls["ledger"], rows, today)
        log(f"seeded: {facts}")
        home = Path(tmp)
        (home / "dags").mkdir()
        (home / "dags" / "bench_dags.py").write_text(DAG_FILE.format(dag_ids=list(PIPELINES)))
        env = {"AIRFLOW_CONN_LEDGER": urls["ledger"], "AIRFLOW__ALTCRAFT__LEDGER_CONN_ID": "ledger"}
        metadata = urls["metadata"].replace("postgresql://", "postgresql+psycopg://")
        airflow = LocalAirflow(
            home=home,
            sql_alchemy_conn=metadata,
            dags_folder=home / "dags",
            api_port=free_port(),
            extra_env=env,
        )
        with airflow:
            log("migrating Airflow's metadata database")
            airflow.migrate()
            airflow.airflow("dags", "reserialize")
            airflow.stack.start_airflow("api-server")
            from demo.airflow_api import wait_for

            wait_for("the API server", airflow.api.healthy, 180, check=airflow.stack.check_alive)
            register_runs(airflow, today)
            session = requests.Session()
            airflow.api.login()
            session.headers["Authorization"] = airflow.api._session.headers["Authorization"]
            facts["load"] = _load()
            results = measure(airflow.api_url, session, today, repeat)
            facts["load_after"] = _load()
    facts.update(
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        postgres=_postgres_version(),
        airflow=airflow_version,
        repeat=repeat,
    )
    output.write_text(render(facts, results), encoding="utf-8")
    log(f"wrote {output}")
    for name, row in results.items():
        log(f"{name}: median {row['median_ms']} ms, p95 {row['p95_ms']} ms")


def _load() -> str:
    """The 1-minute load average, with the CPU count beside it."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def _postgres_version() -> str:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return row[0].split()[0] if row else "?"


if __name__ == "__main__":
    main()
