"""``make demo``: the demo pipeline backfilled by a real Airflow on SQLite, launching into the emulator.

Starts the Altcraft API emulator (demo seed: database 1, scenario 12 "Welcome chain"), a SQLite CRM with
a few thousand sample contacts, and Airflow (scheduler, DAG processor, triggerer, API server;
LocalExecutor on SQLite) with its home in ``.airflow/``. Then backfills ``demo_sqlite_welcome`` over the
last 7 days, prints what each run did and what the emulator recorded, and keeps everything running for
the Airflow UI until Ctrl-C. Everything is reused by the next ``make demo``; ``make clean`` starts over.

Environment: ``DEMO_KEEP_RUNNING=0`` (or ``false``, ``no``) exits after the summary; ``DEMO_API_PORT``
(8080) and ``DEMO_EMULATOR_PORT`` (8765) move the two ports; ``DEMO_HOME`` moves the state (default
``.airflow``); ``DEMO_DAGS_FOLDER`` replaces the repository's ``dags/``. A value that does not fit stops
the demo at once with status 2, naming the variable (`demo_settings`). Ctrl-C or SIGTERM stops every
process and exits with status 0. ``<DEMO_HOME>/env.sh`` holds the Airflow CLI's environment
(``make demo-shell``).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from altcraft.testing import EmulatorClient
from demo import settings as env
from demo.airflow_api import SUMMARY_COUNTS, wait_for
from demo.airflow_env import REPO, LocalAirflow, emulator_command, port_in_use
from demo.seed_crm import has_contacts, sample_contacts, write_contacts

DAG_ID = "demo_sqlite_welcome"
TASK_ID = "import_and_launch"
SCENARIO_ID = 12
DAYS = 7
RUNS_TIMEOUT = 900
ENV_FILE = "env.sh"  # the Airflow CLI's environment; `make demo-shell` sources it


class DemoError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


@dataclass(frozen=True)
class DemoSettings:
    """The ``DEMO_*`` environment variables, checked (docs/demo.md lists them)."""

    home: Path
    dags_folder: Path
    api_port: int
    emulator_port: int
    keep_running: bool


def demo_settings(environ: Mapping[str, str]) -> DemoSettings:
    """The settings of ``environ``; a value that does not fit raises a `SettingError` naming its variable."""
    settings = DemoSettings(
        home=env.folder(environ, "DEMO_HOME", REPO / ".airflow", must_exist=False),
        dags_folder=env.folder(environ, "DEMO_DAGS_FOLDER", REPO / "dags", must_exist=True),
        api_port=env.port(environ, "DEMO_API_PORT", 8080),
        emulator_port=env.port(environ, "DEMO_EMULATOR_PORT", 8765),
        keep_running=env.flag(environ, "DEMO_KEEP_RUNNING", True),
    )
    if settings.api_port == settings.emulator_port:
        raise env.SettingError(
            f"DEMO_API_PORT and DEMO_EMULATOR_PORT are both {settings.api_port}: give them different ports"
        )
    return settings


def main() -> int:
    # `kill` and a closed terminal stop everything as Ctrl-C does (the components run in sessions of their
    # own: a hangup reaches only this process, and its default action would leave them running)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.default_int_handler)
    try:
        settings = demo_settings(os.environ)
    except env.SettingError as error:
        print(f"make demo: {error} (the DEMO_* variables: docs/demo.md)", file=sys.stderr)
        return 2
    try:
        check_ports({"DEMO_API_PORT": settings.api_port, "DEMO_EMULATOR_PORT": settings.emulator_port})
        run(settings)
    except DemoError as error:
        print(f"\nmake demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped.")
    return 0


def check_ports(ports: dict[str, int]) -> None:
    for variable, port in ports.items():
        if port_in_use(port):
            raise DemoError(
                f"port {port} on 127.0.0.1 is already in use (another `make demo`, `make emulator` or "
                f"Airflow?). Stop that program, or choose another port: {variable}=<port> make demo"
            )


def run(settings: DemoSettings) -> None:
    started = time.monotonic()
    home = settings.home
    crm = home / "demo_crm.db"
    seed_crm(crm)
    emulator = EmulatorClient(f"http://127.0.0.1:{settings.emulator_port}")
    airflow = LocalAirflow(
        home=home,
        # SQLite lets one writer in at a time, after every open read has ended: wait up to a minute for the
        # lock (pysqlite's default is 5 s, after which the API server answers a run trigger with 500
        # "Database error" on a busy machine). Write-ahead-log mode was tried and is worse: a transaction
        # that reads, then writes fails at once whenever another component committed in between.
        sql_alchemy_conn=f"sqlite:///{home / 'airflow.db'}?timeout=60",
        dags_folder=settings.dags_folder,
        api_port=settings.api_port,
        extra_env={
            "AIRFLOW_CONN_ALTCRAFT_DEFAULT": emulator.connection_json(),
            # A task's start may wait out that busy timeout (docs/demo.md: the API server's SQLite lock-up).
            # With Airflow's 5 s, its worker resent the start four times, each timing out, gave up and killed
            # the task, which was retried 5 minutes later; the first start went through after 60 s (seen
            # 2026-12-06, e2e). Waiting longer than the lock can last avoids all that.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "90",
        },
    )
    with airflow:
        try:
            start_and_backfill(airflow, settings.emulator_port, crm)
        except Exception:
            print(f"\nThe demo failed; the end of each component's log:\n{airflow.stack.logs(30)}")
            raise
        print(f"\nDone in {time.monotonic() - started:.0f} s.")
        print(f"\nAirflow UI: {airflow.api_url}  (user admin, password {airflow.password})")
        print(f"Emulator:   {emulator.url}/_emulator/state   Component logs: {airflow.stack.log_dir}")
        print(f"Airflow CLI: {demo_shell(home)}  (or: . {home / ENV_FILE}; airflow dags list)")
        print(last_line(settings.keep_running, os.getpid()), flush=True)
        if settings.keep_running:
            while True:
                airflow.stack.check_alive()
                time.sleep(2)


def last_line(keep_running: bool, pid: int) -> str:
    """How to stop what keeps running or, with ``DEMO_KEEP_RUNNING=0``, that the addresses above are gone."""
    if keep_running:
        return f"Everything keeps running; press Ctrl-C (or kill {pid}) to stop."
    return (
        "Everything has stopped (DEMO_KEEP_RUNNING=0): the UI and the emulator answer only while the demo "
        "runs. `make demo` starts them again on this state, launching nobody twice."
    )


def demo_shell(home: Path) -> str:
    """The `make demo-shell` that opens this demo's state: the Makefile looks in .airflow/ unless told."""
    if home == (REPO / ".airflow").resolve():
        return "make demo-shell"
    return f"DEMO_HOME={shlex.quote(str(home))} make demo-shell"


def start_and_backfill(airflow: LocalAirflow, emulator_port: int, crm: Path) -> None:
    """Everything up to the summary: database, emulator, components, connection, backfill, report."""
    emulator = EmulatorClient(f"http://127.0.0.1:{emulator_port}")
    step("Preparing the Airflow metadata database (SQLite)")
    airflow.migrate()
    step(f"Starting the Altcraft API emulator on {emulator.url}")
    airflow.stack.start("emulator", emulator_command("127.0.0.1", emulator_port))
    wait_for("the emulator", lambda: _answers(emulator), 60, check=airflow.stack.check_alive)
    step("Starting Airflow: scheduler, DAG processor, triggerer, API server")
    airflow.start()
    airflow.write_env(airflow.home / ENV_FILE)
    airflow.api.put_connection("demo_crm", "sqlite", host=str(crm), description="Demo CRM (SQLite)")
    airflow.wait_for_dags(DAG_ID, timeout=180)
    dates = logical_dates(datetime.now(UTC))
    step(f"Backfilling {DAG_ID} over {dates[0]:%Y-%m-%d} .. {dates[-1] + timedelta(days=1):%Y-%m-%d}")
    backfill(airflow, dates)
    runs = airflow.wait_for_runs(DAG_ID, dates, RUNS_TIMEOUT)
    counts = run_counts(airflow, runs)
    ledger = airflow.home / "altcraft_ledger.db"
    print(summary_table(runs, counts))
    print(rejection_reasons(ledger))
    print(emulator_totals(emulator, counts, ledger))


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def seed_crm(path: Path) -> None:
    """The sample CRM: 14 days of contacts up to today (kept as it is when it exists)."""
    url = f"sqlite:///{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if has_contacts(url):
        step(f"Reusing the demo CRM {path}")
        return
    contacts = sample_contacts(end=datetime.now(UTC), days=14, per_day=250, duplicate_every=97)
    write_contacts(url, contacts)
    broken = sum(c.problem is not None for c in contacts)
    step(f"Created the demo CRM {path}: {len(contacts)} contacts over 14 days, {broken} of them broken")


def logical_dates(now: datetime) -> list[datetime]:
    """The daily runs of the last 7 whole days (UTC), oldest first."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=back) for back in range(DAYS, 0, -1)]


def backfill(airflow: LocalAirflow, dates: list[datetime]) -> None:
    """``airflow backfill create`` for the days without a run; an earlier demo's runs are kept as they are."""
    existing = days_with_a_run(airflow.api.runs(DAG_ID))
    missing = [logical for logical in dates if logical.date() not in existing]
    if missing:
        try:
            airflow.backfill(DAG_ID, missing[0], missing[-1])
        except RuntimeError as error:
            if "Another backfill is running" not in str(error):
                raise
            step("Waiting for the scheduler to close the backfill of an earlier demo (it checks every 30 s)")
            airflow.api.unpause(DAG_ID)  # its runs may still have to finish
            airflow.wait_for_backfills(DAG_ID, timeout=RUNS_TIMEOUT)
            airflow.backfill(DAG_ID, missing[0], missing[-1])
    else:
        step("Every run exists from an earlier demo: showing them (nobody is launched again)")
    airflow.api.unpause(DAG_ID)


def days_with_a_run(runs: list[dict[str, Any]]) -> set[date]:
    """The days (UTC) of the runs that have a logical date: a run triggered without one (`airflow dags
    trigger`, as docs/demo.md shows) covers no day of the backfill."""
    return {_day(run["logical_date"]) for run in runs if run["logical_date"]}


def _day(timestamp: str) -> date:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC).date()


def run_counts(airflow: LocalAirflow, runs: list[dict[str, Any]]) -> list[dict[str, int] | None]:
    """Each run's delivery counts from its XCom summaries (None for a run that did not succeed)."""
    return [
        airflow.api.run_summary(DAG_ID, run["dag_run_id"], TASK_ID) if run["state"] == "success" else None
        for run in runs
    ]


def summary_table(runs: list[dict[str, Any]], counts: list[dict[str, int] | None]) -> str:
    """One line per run and a total line, as aligned text."""
    header = ["run (data interval, UTC)", "state", *SUMMARY_COUNTS]
    totals = {name: sum(c[name] for c in counts if c) for name in SUMMARY_COUNTS}
    rows = [
        [
            f"{run['data_interval_start'][:10]} .. {run['data_interval_end'][:10]}",
            run["state"],
            *(str(count[name]) if count else "-" for name in SUMMARY_COUNTS),
        ]
        for run, count in zip(runs, counts, strict=True)
    ]
    rows.append(["total", "", *(str(totals[name]) for name in SUMMARY_COUNTS)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = enumerate(zip(row, widths, strict=True))
        return "  ".join(cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in cells)

    rule = "-" * len(line(header))
    return "\n".join(["", line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


def rejection_reasons(ledger: Path) -> str:
    """Why rows were rejected, from the sync ledger's ``altcraft_outcomes`` (each source row once)."""
    engine = sa.create_engine(f"sqlite:///{ledger}")
    query = sa.text(
        "SELECT reason, COUNT(DISTINCT source_key) FROM altcraft_outcomes "
        "WHERE dag_id = :dag_id AND outcome = 'rejected' GROUP BY reason ORDER BY 2 DESC, 1"
    )
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(query, {"dag_id": DAG_ID}))
    finally:
        engine.dispose()
    lines = [f"  {count:5}  {reason}" for reason, count in rows]
    return "\nRejected rows by reason (the ledger's altcraft_outcomes table):\n" + "\n".join(lines)


def emulator_totals(emulator: EmulatorClient, counts: list[dict[str, int] | None], ledger: Path) -> str:
    """What the emulator recorded, and why it may differ from the runs' counts."""
    launches = emulator.journal(SCENARIO_ID)
    profiles = {entry["profile_id"] for entry in launches}
    text = (
        f"\nThe emulator recorded {len(launches)} launches into scenario {SCENARIO_ID} "
        f'"Welcome chain" ({len(profiles)} distinct profiles).'
    )
    if None in counts:
        text += "\nSome runs did not succeed: open them in the Airflow UI to read their task logs."
    if sum(c["launched"] for c in counts if c) != len(launches):
        text += (
            "\nThe emulator keeps its state in memory and counts only this session's launches; runs made by "
            f"an earlier `make demo` are remembered by the sync ledger ({ledger}), so nobody is launched "
            "twice. `make clean` starts the demo over."
        )
    return text


def _answers(emulator: EmulatorClient) -> bool:
    try:
        emulator.state()
    except (OSError, RuntimeError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
