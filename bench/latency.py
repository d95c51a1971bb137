"""Latency of event-driven pipelines: from a row's commit (or a webhook's 200) to its launch at Altcraft.

A real Airflow (scheduler, triggerer, DAG processor, API server; LocalExecutor on a fresh PostgreSQL
metadata database) runs three pipelines against one emulator:

* ``lat_poll``: a PostgreSQL table polled every second (``trigger: poll``);
* ``lat_hook``: HMAC-signed webhooks (``trigger: webhook``, store checked every second);
* ``lat_sched``: the same kind of table on a one-minute schedule, the baseline without a trigger.

Two phases feed all three at once: a *steady* rate (one contact each per ``BENCH_LATENCY_EVERY`` s for
``BENCH_LATENCY_SECONDS`` s) and a *burst* (``BENCH_LATENCY_BURST`` contacts each, at once). A contact's
latency is the emulator journal's launch time minus the moment the row was committed or the webhook
answered 200 (one clock: everything runs on this machine). ``BENCH_LATENCY_RUNS`` sets the triggered
pipelines' ``max_active_runs`` (default: the spec's default), e.g. 1 to compare with one run at a time.

``python -m bench.latency`` (``make bench-latency``) runs only this and rewrites its section of
docs/benchmarks.md; ``make bench`` runs it with the rest.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
POLL, HOOK, SCHED = "lat_poll", "lat_hook", "lat_sched"
SCENARIOS = {POLL: 21, HOOK: 22, SCHED: 23}
SECRET = "bench-webhook-secret"
GOAL_P95_S = 15.0
BEGIN, END = "<!-- latency:begin -->", "<!-- latency:end -->"
PG = "postgres@127.0.0.1:5432"


def log(message: str) -> None:
    sys.stderr.write(f"[bench latency {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def specs(runs: int | None = None) -> dict[str, dict[str, Any]]:
    """The three pipelines; ``runs``: the triggered ones' ``max_active_runs`` (None: the spec default)."""
    common: dict[str, Any] = {
        "timezone": "UTC",
        "start_date": "2024-01-01",
        "retries": 1,
        "retry_delay": "1s",
        "mapping": {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "first_name"}},
        "ledger_conn_id": "lat_crm",
    }

    def table(name: str) -> dict[str, Any]:
        return {
            "type": "sql_table",
            "conn_id": "lat_crm",
            "table": name,
            "key_column": "id",
            "created_at_column": "created_at",
        }

    found = {
        POLL: {
            **common,
            "id": POLL,
            "source": table("poll_contacts"),
            "trigger": {"type": "poll", "interval": "1s"},
        },
        HOOK: {
            **common,
            "id": HOOK,
            "source": {"type": "webhook", "key_column": "email"},
            "trigger": {"type": "webhook", "secret_conn_id": "lat_secret", "interval": "1s"},
        },
        SCHED: {**common, "id": SCHED, "schedule": "1m", "source": table("sched_contacts")},
    }
    for name in (POLL, HOOK) if runs else ():
        found[name]["max_active_runs"] = runs
    return {name: {**spec, "scenario": {"id": SCENARIOS[name], "db_id": 1}} for name, spec in found.items()}


def percentiles(values: list[float]) -> dict[str, float]:
    """Count, median, 95th percentile (nearest rank) and maximum."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p95 = ordered[min(len(ordered), max(1, -(-95 * len(ordered) // 100))) - 1]
    return {"n": len(ordered), "p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


class Feeder:
    """Writes contacts into the two tables and posts webhooks, remembering when each was committed."""

    def __init__(self, crm: sa.Engine, hook_url: str) -> None:
        self.crm = crm
        self.hook_url = hook_url
        self.session = requests.Session()
        self.committed: dict[str, dict[str, float]] = {POLL: {}, HOOK: {}, SCHED: {}}
        self.phase: dict[str, str] = {}
        self._next = 1

    def rows(self, dag_id: str, count: int, phase: str) -> None:
        table = "poll_contacts" if dag_id == POLL else "sched_contacts"
        now = datetime.now(UTC)
        batch = [
            {"id": i, "email": f"{dag_id}{i}@example.com", "first_name": "B", "created_at": now}
            for i in range(self._next, self._next + count)
        ]
        self._next += count
        with self.crm.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {table} VALUES (:id, :email, :first_name, :created_at)"), batch
            )
        committed = time.time()
        for row in batch:
            self.committed[dag_id][row["email"]] = committed
            self.phase[row["email"]] = phase

    def webhook(self, index: int, phase: str) -> None:
        from altcraft.webhooks.kinds import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

        email = f"{HOOK}{index}@example.com"
        body = json.dumps({"email": email, "first_name": "B"}).encode()
        stamp = str(int(time.time()))
        headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)}
        answer = requests.post(self.hook_url, data=body, headers=headers, timeout=60)
        answer.raise_for_status()
        self.committed[HOOK][email] = time.time()
        self.phase[email] = phase


def watermark(metadata_url: str, dag_id: str) -> str | None:
    """The pipeline's event watermark in Airflow's asset state store, once its watcher has polled."""
    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            query = (
                "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
                "WHERE a.uri = :uri AND s.key = 'window:watermark'"
            )
            return conn.scalar(sa.text(query), {"uri": f"altcraft-pipeline://{dag_id}/events"})
    finally:
        engine.dispose()


STAGES = ("fired", "run queued", "run started", "plan started", "launch task started", "launched")


def stage_marks(metadata_url: str, crm: sa.Engine, dag_id: str) -> dict[str, dict[str, float]]:
    """Per contact (by ledger source key), when each of `STAGES` happened (epoch seconds), ``fired`` aside.

    The run is the one whose ledger outcome says it launched the contact; ``fired`` is found per contact
    by `stages` (the first event of the pipeline's event asset after the commit).
    """
    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            runs = {
                run_id: (queued, started)
                for run_id, queued, started in conn.execute(
                    sa.text("SELECT run_id, queued_at, start_date FROM dag_run WHERE dag_id = :d"),
                    {"d": dag_id},
                )
            }
            tasks = {
                (run_id, task_id): started
                for run_id, task_id, started in conn.execute(
                    sa.text(
                        "SELECT run_id, task_id, min(start_date) FROM task_instance WHERE dag_id = :d "
                        "GROUP BY run_id, task_id"
                    ),
                    {"d": dag_id},
                )
            }
    finally:
        engine.dispose()
    with crm.connect() as conn:
        query = "SELECT source_key, run_id FROM altcraft_outcomes WHERE dag_id = :d AND outcome = 'launched'"
        launched_by = dict(conn.execute(sa.text(query), {"d": dag_id}).all())
    marks: dict[str, dict[str, float]] = {}
    for key, run_id in launched_by.items():
        queued, started = runs.get(run_id, (None, None))
        found = {
            "run queued": queued,
            "run started": started,
            "plan started": tasks.get((run_id, "plan")),
            "launch task started": tasks.get((run_id, "import_and_launch")),
        }
        marks[key] = {name: at.timestamp() for name, at in found.items() if at is not None}
    return marks


def row_id(dag_id: str, email: str) -> str:
    """The source key (table id) of a row the feeder wrote for ``dag_id``."""
    return email.removeprefix(dag_id).split("@")[0]


def event_times(metadata_url: str, dag_id: str) -> list[float]:
    """When the pipeline's event asset got each event (the trigger fired), sorted."""
    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            query = (
                "SELECT e.timestamp FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                "WHERE a.uri = :uri ORDER BY e.timestamp"
            )
            return [
                at.timestamp()
                for at in conn.scalars(sa.text(query), {"uri": f"altcraft-pipeline://{dag_id}/events"})
            ]
    finally:
        engine.dispose()


def stages(
    committed: dict[str, float],
    launched: dict[str, float],
    marks: dict[str, dict[str, float]],
    events: list[float],
    source_key: Any,
) -> dict[str, float]:
    """Seconds from commit to each of `STAGES` (`percentiles`) over ``committed`` (contacts launched only)."""
    import bisect

    found: dict[str, list[float]] = {name: [] for name in STAGES}
    for email, at in committed.items():
        if email not in launched:
            continue
        stamps = dict(marks.get(source_key(email), {}), launched=launched[email])
        index = bisect.bisect_left(events, at)
        if index < len(events):
            stamps["fired"] = events[index]
        for name, stamp in stamps.items():
            found[name].append(stamp - at)
    return {name: percentiles(values) for name, values in found.items() if values}


def measure(
    airflow: Any, emulator: Any, crm: sa.Engine, metadata_url: str, seconds: float, every: float, burst: int
) -> dict[str, Any]:
    feeder = Feeder(crm, f"{airflow.api_url}/altcraft-webhooks/{HOOK}")
    for dag_id in (POLL, HOOK, SCHED):
        airflow.api.unpause(dag_id)
    # rows committed before the poll watcher's first check are, by design, the schedule's: wait for it
    from demo.airflow_api import wait_for

    wait_for("the poll watcher's watermark", lambda: watermark(metadata_url, POLL), 300)
    time.sleep(5)
    log(f"steady: one contact per pipeline every {every} s for {seconds} s")
    index = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        feeder.rows(POLL, 1, "steady")
        feeder.rows(SCHED, 1, "steady")
        feeder.webhook(index, "steady")
        index += 1
        time.sleep(max(0.0, every - (time.monotonic() - tick)))
    time.sleep(30)
    log(f"burst: {burst} contacts per pipeline at once")
    feeder.rows(POLL, burst, "burst")
    feeder.rows(SCHED, burst, "burst")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: feeder.webhook(i, "burst"), range(index, index + burst)))
    expected = {dag_id: len(keys) for dag_id, keys in feeder.committed.items()}
    log(f"waiting for {sum(expected.values())} launches")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = {d: len(emulator.journal(SCENARIOS[d])) for d in expected}
        if all(done[d] >= expected[d] for d in expected):
            break
        time.sleep(2)
    results: dict[str, Any] = {}
    for dag_id, committed in feeder.committed.items():
        journal = emulator.journal(SCENARIOS[dag_id])
        launched = {
            e["key"]: datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() for e in journal
        }
        keys = [e["key"] for e in journal]
        per_phase: dict[str, list[float]] = {"steady": [], "burst": []}
        for email, at in committed.items():
            if email in launched:
                per_phase[feeder.phase[email]].append(launched[email] - at)
        runs = airflow.api.runs(dag_id)
        marks = stage_marks(metadata_url, crm, dag_id)
        events = event_times(metadata_url, dag_id)
        key_of = str if dag_id == HOOK else partial(row_id, dag_id)
        by_phase = {
            phase: {email: at for email, at in committed.items() if feeder.phase[email] == phase}
            for phase in ("steady", "burst")
        }
        results[dag_id] = {
            "stages": {
                phase: stages(rows, launched, marks, events, key_of) for phase, rows in by_phase.items()
            },
            "sent": len(committed),
            "launched": len(set(keys) & set(committed)),
            "launched_twice": len(keys) - len(set(keys)),
            "runs": len(runs),
            **{phase: percentiles(values) for phase, values in per_phase.items()},
        }
    return results


def run() -> dict[str, Any]:
    """Start everything, measure, stop everything; the results."""
    import psycopg2
    from demo.airflow_env import LocalAirflow, free_port

    from altcraft.pipelines.dag_folder import init
    from altcraft.testing import emulator_process

    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", "60"))
    every = float(os.environ.get("BENCH_LATENCY_EVERY", "2"))
    burst = int(os.environ.get("BENCH_LATENCY_BURST", "200"))
    runs = int(os.environ.get("BENCH_LATENCY_RUNS", "0")) or None
    prefix = f"altcraft_lat_{uuid.uuid4().hex[:8]}"
    names = {"metadata": prefix, "crm": f"{prefix}_crm"}
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        for name in names.values():
            cursor.execute(f"CREATE DATABASE {name}")
    crm = sa.create_engine(f"postgresql+psycopg2://{PG}/{names['crm']}")
    try:
        with crm.begin() as conn:
            for table in ("poll_contacts", "sched_contacts"):
                conn.exec_driver_sql(
                    f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, "
                    "created_at TIMESTAMPTZ NOT NULL)"
                )
                conn.exec_driver_sql(f"CREATE INDEX ON {table} (created_at)")
        with emulator_process() as emulator, tempfile.TemporaryDirectory(prefix="altcraft-lat-") as tmp:
            emulator.seed(
                scenarios=[
                    {"id": sid, "name": f"Welcome ({name})", "db_id": 1, "is_active": True}
                    for name, sid in SCENARIOS.items()
                ]
            )
            home = Path(tmp)
            dags = home / "dags"
            init(dags)  # the DAG files, as `python -m altcraft.pipelines init` writes them
            for name, spec in specs(runs).items():
                (dags / "pipelines" / f"{name}.yaml").write_text(json.dumps(spec))
            env = {
                "AIRFLOW_CONN_ALTCRAFT_DEFAULT": emulator.connection_json(),
                "AIRFLOW_CONN_LAT_CRM": f"postgresql://{PG}/{names['crm']}",
                "AIRFLOW_CONN_LAT_SECRET": json.dumps({"conn_type": "generic", "password": SECRET}),
            }
            metadata = f"postgresql+psycopg2://{PG}/{names['metadata']}"
            with LocalAirflow(
                home=home, sql_alchemy_conn=metadata, dags_folder=dags, api_port=free_port(), extra_env=env
            ) as airflow:
                log("starting Airflow")
                airflow.migrate()
                airflow.start(timeout=420)  # patient: the machine is shared
                airflow.wait_for_dags(POLL, HOOK, SCHED)
                results = measure(airflow, emulator, crm, metadata, seconds, every, burst)
    finally:
        crm.dispose()
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return {"seconds": seconds, "every": every, "burst": burst, "runs": runs, "pipelines": results}


def render(latency: dict[str, Any]) -> str:
    """The latency section of docs/benchmarks.md, between its markers."""
    labels = {POLL: "poll (1 s)", HOOK: "webhook (1 s)", SCHED: "schedule every minute (baseline)"}
    rows = []
    for dag_id, label in labels.items():
        found = latency["pipelines"][dag_id]
        for phase in ("steady", "burst"):
            p = found[phase]
            figures = " | ".join(f"{p[k]:.1f}" if k in p else "-" for k in ("p50", "p95", "max"))
            rows.append(f"| {label} | {phase} | {p['n']:,} | {figures} |")
        rows.append(
            f"| {label} | runs / launched twice | {found['runs']} runs | {found['launched_twice']} | "
            f"{found['launched']:,} of {found['sent']:,} launched | |"
        )
    stage_rows = [
        f"| {label} | {phase} | "
        + " | ".join(
            f"{found[name]['p50']:.1f} / {found[name]['p95']:.1f}" if name in found else "-"
            for name in STAGES
        )
        + " |"
        for dag_id, label in labels.items()
        if dag_id != SCHED
        for phase, found in latency["pipelines"][dag_id]["stages"].items()
    ]
    command = (
        f"BENCH_LATENCY_SECONDS={latency['seconds']:g} BENCH_LATENCY_EVERY={latency['every']:g} "
        f"BENCH_LATENCY_BURST={latency['burst']} "
        + (f"BENCH_LATENCY_RUNS={latency['runs']} " if latency.get("runs") else "")
        + "make bench-latency"
    )
    return "\n".join(
        [
            BEGIN,
            "## Latency of event-driven pipelines",
            "",
            f"* Command: `{command}` (also part of `make bench`); {latency.get('date', '')}, "
            f"load average before / after {latency.get('load', '')}",
            "* Seconds from the row's commit (or the webhook's 200) to the launch in the emulator's journal.",
            f"  Steady: one contact per pipeline every {latency['every']:g} s for {latency['seconds']:g} s;",
            f"  burst: {latency['burst']} per pipeline at once. "
            f"Goal (poll, webhook): p95 ≤ {GOAL_P95_S:g} s.",
            "* Real scheduler, triggerer, DAG processor and API server (LocalExecutor, parallelism 4),",
            "  PostgreSQL metadata database, on the shared 2-core machine (see bench/latency.py).",
            "",
            "| pipeline | phase | contacts | p50 s | p95 s | max s |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Where the seconds go: p50 / p95 seconds from the commit (or the 200) to each step, over the",
            "contacts launched. *fired*: the first event of the pipeline's event asset after the commit; the",
            "run and task steps are those of the run that launched the contact (Airflow's `dag_run` and",
            "`task_instance`; the run from the ledger's outcome).",
            "",
            "| pipeline | phase | " + " | ".join(STAGES) + " |",
            "|---|---|" + "---:|" * len(STAGES),
            *stage_rows,
            END,
        ]
    )


def write_section(path: Path, section: str) -> None:
    """Replace the latency section of ``path`` (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    load = os.getloadavg()
    latency = run()
    after = os.getloadavg()
    latency["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    latency["load"] = " / ".join(", ".join(f"{x:.2f}" for x in values) for values in (load, after))
    output = Path(os.environ.get("BENCH_OUTPUT", REPO / "docs" / "benchmarks.md"))
    write_section(output, render(latency))
    log(f"wrote {output}: {json.dumps(latency['pipelines'])}")


if __name__ == "__main__":
    main()
