"""ImportAndLaunchScenarioOperator inside real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa

from tests.airflow_helpers import (
    asset_event_extras,
    install_dag,
    rendered_fields,
    run_dag,
    task_states,
    xcom_values,
)

from .conftest import EMAIL_MAPPING, MARKER, PG_URL, contacts, launch_counts

DAG_FILE = Path(__file__).parent / "dag_files" / "welcome_contacts.py"
DAY = pendulum.datetime(2026, 3, 1, tz="UTC")


@pytest.fixture
def ledger_conn(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_PG", PG_URL.replace("postgresql+psycopg2", "postgresql"))
    return "ledger_pg"


@pytest.fixture
def dag_with(airflow_db, emulator, scenario_id, ledger_conn):
    def build(
        records,
        dag_id="welcome_test",
        key_column="id",
        sql_source=None,
        file_source=None,
        contacts_from_task=False,
        execution_timeout_seconds=None,
        expand=None,
        **operator,
    ):
        config = {
            "dag_id": dag_id,
            "expand": expand,
            "execution_timeout_seconds": execution_timeout_seconds,
            "contacts": records,
            "contacts_from_task": contacts_from_task,
            "key_column": key_column,
            "sql_source": sql_source,
            "file_source": file_source,
            "operator": {
                "scenario_id": scenario_id,
                "mapping": EMAIL_MAPPING,
                "ledger_conn_id": ledger_conn,
                **operator,
            },
        }
        return install_dag(DAG_FILE, config, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))

    return build


@pytest.mark.parametrize("delivery", ["batch", "single", "async"])
def test_dag_run_delivers_and_reports_counts_only(dag_with, emulator, scenario_id, delivery):
    dag = dag_with(
        [*contacts(12), {"id": 999, "email": "broken"}], delivery=delivery, batch_size=5, poll_interval=0.1
    )
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert {k: summary[k] for k in ("found", "launched", "skipped", "rejected", "failed", "uncertain")} == {
        "found": 13,
        "launched": 12,
        "skipped": 0,
        "rejected": 1,
        "failed": 0,
        "uncertain": 0,
    }
    assert not any(c["email"] in repr(summary) for c in contacts(12)), "no contact data in XCom"
    assert "@example.org" not in repr(summary)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 12
    link = xcom_values(dag.dag_id, dag_run.run_id, key="_link_AltcraftScenarioLink")["import_and_launch", -1]
    assert link == f"{emulator.url}/workflows/{scenario_id}"
    assert asset_event_extras(f"altcraft://altcraft_default/scenarios/{scenario_id}")[-1]["launched"] == 12


def test_templated_content_and_launch_options_reach_altcraft(dag_with, emulator, scenario_id):
    content = {"dag": "{{ dag.dag_id }}", "day": "{{ ds }}", "promo": "SPRING", "amount": 120}
    options = {"skip_triggers": True, "skip_invalid_subscriptions": False, "detect_geo": True}
    dag = dag_with(contacts(3), content=content, **options)
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "success"}
    rendered = {"dag": "welcome_test", "day": "2026-03-01", "promo": "SPRING", "amount": 120}
    journal = emulator.journal(scenario_id)
    assert [entry["options"] for entry in journal] == [{"content": rendered, **options}] * 3


def test_running_the_same_window_again_launches_nobody_twice(dag_with, emulator, scenario_id):
    dag = dag_with(contacts(10))
    first = run_dag(dag, DAY)
    second = run_dag(dag, DAY)  # dag.test() clears the logical date and runs its window again
    assert task_states(second) == {"import_and_launch": "success"}
    summary = xcom_values(dag.dag_id, second.run_id)["import_and_launch", -1]
    assert (summary["launched"], summary["skipped"]) == (0, 10)
    assert first.data_interval_start == second.data_interval_start
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scenario_id": 987654}, "does not exist"),
        ({"db_id": 2}, "works on database 1"),
    ],
)
def test_preflight_fails_before_sending(dag_with, emulator, scenario_id, change, message, capfd):
    dag = dag_with(contacts(3), **change)
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert emulator.journal() == [], "nothing is sent when the pre-flight check fails"
    assert message in _output(capfd)


def test_a_wrong_token_fails_before_sending_naming_the_connection_field(
    dag_with, emulator, monkeypatch, capfd
):
    """A token Altcraft refuses (401/403) fails the task at once, naming the connection and the field to
    fix; it said only "Altcraft error 403 from workflows/list: Invalid API token"."""
    dag = dag_with(contacts(3))
    connection = json.loads(os.environ["AIRFLOW_CONN_ALTCRAFT_DEFAULT"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps({**connection, "password": "not-the-token"})
    )

    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert emulator.journal() == [], "nothing is launched with a refused token"
    output = _output(capfd)
    assert "connection 'altcraft_default'" in output and "API token (password field)" in output, output
    assert "not-the-token" not in output


def test_inactive_scenario_fails_fast(dag_with, emulator, scenario_id, capfd):
    emulator.seed(
        scenarios=[{"id": scenario_id, "name": "Off", "db_id": 1, "is_active": False, "mode": "skip"}]
    )
    dag_run = run_dag(dag_with(contacts(3)), DAY)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert "is not active" in _output(capfd)
    assert not launch_counts(emulator, scenario_id)


def test_too_many_rejections_fail_after_delivering_the_valid_ones(dag_with, emulator, scenario_id, capfd):
    broken = [{"id": 1000 + i, "email": f"not-an-email-{i}"} for i in range(5)]
    dag_run = run_dag(dag_with(contacts(5) + broken, max_rejected_ratio=0.2), DAY)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5
    assert "above max_rejected_ratio" in _output(capfd)


def test_rejected_contacts_keyed_by_email_or_phone_are_masked_in_the_log(
    dag_with, emulator, scenario_id, capfd
):
    """A source keyed by its email column: the log's sample names a rejected contact by a masked key."""
    records = [
        {"email": "keyed.anna@example.org", "first_name": "Anna", "phone": "not a phone"},
        {"email": "keyed.boris@example.org", "first_name": "Boris", "loyalty": "many"},
        *({"email": f"keyed{i}@example.org", "first_name": "Ok"} for i in range(2)),
    ]
    dag_run = run_dag(dag_with(records, key_column="email", max_rejected_ratio=1), DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    output = _output(capfd)
    assert "Sample (masked)" in output and "rejected k***@e***.org: phones:" in output
    assert "keyed.anna@example.org" not in output and "keyed.boris@example.org" not in output


#: Free text a sender wrote in a column named like the sources' old error marker (no email or phone: a
#: name and an address, which no masking hides)
SENDER_TEXT = "Hidden Personname, 5 Secretstreet"
IN_WINDOW = "2026-02-28T10:00:00Z"  # inside the window of the run of `DAY`
#: The mapping of the tables and files below: their email, no other column
EMAIL_ONLY = {**EMAIL_MAPPING, "fields": {}, "subscriptions": []}


def _sinks(capfd, summary, scenario_id) -> str:
    """The task's log, its XCom summary and the scenario's ledger reasons, as one text."""
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        reasons = conn.execute(
            sa.text("SELECT reason FROM altcraft_outcomes WHERE scenario_id = :s"), {"s": scenario_id}
        ).scalars()
        kept = "\n".join([_output(capfd), repr(summary), *(reason or "" for reason in reasons)])
    engine.dispose()
    return kept


def _assert_error_column_is_data(dag, emulator, scenario_id, capfd, count):
    """The run launched all ``count`` contacts, one of them holding an ``__error__`` column: no rejection,
    and the column's text in no log, XCom or ledger reason."""
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert (summary["launched"], summary["rejected"]) == (count, 0), summary
    assert len(launch_counts(emulator, scenario_id)) == count
    assert SENDER_TEXT not in _sinks(capfd, summary, scenario_id)


def test_a_records_own_error_column_is_data(dag_with, emulator, scenario_id, capfd):
    """A record whose ``__error__`` column holds contact data is a contact like any other: it was rejected
    with that text as the source's reason, in the log, the XCom summary and the ledger."""
    records = [*contacts(3), {"id": 9, "email": "x@example.org", "__error__": SENDER_TEXT}]
    _assert_error_column_is_data(dag_with(records, max_rejected_ratio=1), emulator, scenario_id, capfd, 4)


def test_a_sql_column_named_error_is_data(dag_with, emulator, scenario_id, capfd):
    """A PostgreSQL table with a column ``__error__``: its rows are contacts (each was rejected, the
    column's text its reason in the log, XCom summary and ledger)."""
    table = f"op_error_column_{scenario_id}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE {table} (id INTEGER, email TEXT, "__error__" TEXT)')
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES (1, 'sql1@example.org', %(t)s), (2, 'sql2@example.org', NULL)",
            {"t": SENDER_TEXT},
        )
    sql = f"SELECT id, email, __error__ FROM {table}"
    try:
        dag = dag_with(
            None, sql_source={"conn_id": "ledger_pg", "sql": sql}, mapping=EMAIL_ONLY, max_rejected_ratio=1
        )
        _assert_error_column_is_data(dag, emulator, scenario_id, capfd, 2)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_column_named_error_is_data(dag_with, emulator, scenario_id, capfd, tmp_path, fmt):
    """A CSV header or a JSON Lines key ``__error__``: the line is a contact (it was rejected, the cell's text
    its reason in the log, XCom summary and ledger)."""
    rows = [{"id": 1, "email": "file1@example.org", "__error__": SENDER_TEXT, "created_at": IN_WINDOW}]
    rows += [{"id": 2, "email": "file2@example.org", "__error__": "", "created_at": IN_WINDOW}]
    if fmt == "csv":
        text = (
            ",".join(rows[0])
            + "\n"
            + "".join(",".join(f'"{v}"' for v in row.values()) + "\n" for row in rows)
        )
    else:
        text = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / f"contacts.{fmt}").write_text(text)
    source = {"path": str(tmp_path), "format": fmt, "timestamp_column": "created_at"}
    _assert_error_column_is_data(
        dag_with(None, file_source=source, mapping=EMAIL_ONLY, max_rejected_ratio=1),
        emulator,
        scenario_id,
        capfd,
        2,
    )


def test_a_source_error_quoting_a_row_is_masked_in_the_task_log(dag_with, emulator, scenario_id, capfd):
    """PostgreSQL's error quotes the value a query could not cast: the failure names the source and the
    error, with the contact's email masked (the driver's exception is not chained, it would print it)."""
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS op_cast_contacts")
        conn.exec_driver_sql("CREATE TABLE op_cast_contacts (id INTEGER, email TEXT)")
        conn.exec_driver_sql("INSERT INTO op_cast_contacts VALUES (1, 'cast.person@example.org')")
    sql = "SELECT id, email, CAST(email AS integer) AS n FROM op_cast_contacts"
    try:
        dag_run = run_dag(dag_with(None, sql_source={"conn_id": "ledger_pg", "sql": sql}), DAY)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE op_cast_contacts")
        engine.dispose()
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    output = _output(capfd)
    assert "SourceError: sql_query on connection 'ledger_pg'" in output
    assert "invalid input syntax for type integer" in output and "c***@e***.org" in output
    assert "cast.person@example.org" not in output


def test_contacts_from_an_upstream_task_are_read_when_the_task_runs_and_kept_nowhere(
    dag_with, emulator, scenario_id
):
    """``contacts=read_contacts()`` (an XComArg): the upstream task runs first, its records are launched,
    and they are not a template field, so Airflow's rendered fields (metadata database, UI) hold none."""
    dag = dag_with(contacts(5), contacts_from_task=True)
    assert dag.get_task("import_and_launch").upstream_task_ids == {"read_contacts"}
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"read_contacts": "success", "import_and_launch": "success"}
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5
    rendered = rendered_fields(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert rendered["scenario_id"] == scenario_id
    assert "@example.org" not in repr(rendered) and "+7900" not in repr(rendered)


@pytest.mark.parametrize(("dry_run", "sent"), [("ture", 0), ("True", 0), ("off", 3)])
def test_a_rendered_flag_is_read_strictly(dag_with, emulator, scenario_id, capfd, dry_run, sent):
    """``dry_run="{{ params.dry_run }}"``: a value that is neither true nor false (a typo) fails the task,
    naming the argument, before anything is sent; it is not taken for false (which would send for real)."""
    dag = dag_with(contacts(3), dry_run="{{ params.dry_run }}", params={"dry_run": dry_run})
    dag_run = run_dag(dag, DAY)
    assert sum(launch_counts(emulator, scenario_id).values()) == sent
    if dry_run == "ture":
        assert task_states(dag_run) == {"import_and_launch": "failed"}
        assert "`dry_run` must be true or false, got 'ture'" in _output(capfd)
        assert emulator.journal() == []
    else:
        assert task_states(dag_run) == {"import_and_launch": "success"}


@pytest.mark.parametrize(
    ("delivery", "endpoint", "counts"),
    [
        # (found, launched, uncertain, pending): single mode stops inside its first chunk; in async mode
        # the first batch's task is still pending, settled by a later try
        ("batch", "import_and_start_batch", (4, 2, 2, 0)),
        ("single", "import_and_start", (2, 1, 1, 0)),
        ("async", "import_and_start_batch_task", (4, 0, 2, 2)),
    ],
)
def test_a_try_stopped_by_its_execution_timeout_mid_request_records_that_request_uncertain(
    dag_with, emulator, scenario_id, delivery, endpoint, counts
):
    """The second request hangs past ``execution_timeout`` (the last try): its contacts are recorded
    uncertain by that try and never resent, and the try's summary and the scenario's standing count them.
    They were left ``sending``: counted nowhere (found 4, launched 2, uncertain 0; standing: uncertain 0)."""
    emulator.add_faults(
        {"endpoint": f"workflows/{endpoint}", "kind": "latency", "latency_ms": 6000, "every": 2}
    )
    dag = dag_with(
        contacts(4),
        delivery=delivery,
        batch_size=2,
        execution_timeout_seconds=3,
        deferrable=False,
        poll_interval=0.1,
    )
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    summary = xcom_values(dag.dag_id, dag_run.run_id, key="altcraft_summary")["import_and_launch", -1]
    assert (summary["found"], summary["launched"], summary["uncertain"], summary["pending"]) == counts
    assert (summary["skipped"], summary["rejected"], summary["failed"]) == (0, 0, 0)
    assert summary["scope"] == {"uncertain": counts[2], "failed": 0, "stale_sending": 0}
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        query = "SELECT status FROM altcraft_contacts WHERE scenario_id = :s"
        statuses = Counter(conn.execute(sa.text(query), {"s": scenario_id}).scalars())
    engine.dispose()
    assert statuses["uncertain"] == counts[2] and statuses["sending"] == counts[3]
    assert all(n == 1 for n in launch_counts(emulator, scenario_id).values())


def test_a_task_asked_to_stop_makes_no_further_request(dag_with, emulator, scenario_id):
    """SIGTERM while the task runs (it was marked failed or cleared): Airflow calls ``on_kill`` and lets the
    task run until its supervisor kills it. The request out is answered and settled; no further request is
    made, and the chunk claimed but not sent is released as failed (the next try sends it). All ten were
    launched: ``on_kill`` did nothing."""
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch", "kind": "latency", "latency_ms": 500}
    )
    dag = dag_with(contacts(10), batch_size=2)
    dag_run = run_terminated_once(dag, lambda: bool(emulator.journal(scenario_id)))
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    launched = launch_counts(emulator, scenario_id)
    assert set(launched.values()) == {1} and len(launched) in (2, 4), "the request out, and none after"
    summary = xcom_values(dag.dag_id, dag_run.run_id, key="altcraft_summary")["import_and_launch", -1]
    assert summary["launched"] == len(launched) and summary["uncertain"] == 0
    assert summary["found"] == summary["launched"] + summary["failed"]
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        query = "SELECT status FROM altcraft_contacts WHERE scenario_id = :s"
        statuses = Counter(conn.execute(sa.text(query), {"s": scenario_id}).scalars())
    engine.dispose()
    assert statuses == {"launched": len(launched), "failed": summary["failed"]}


def run_terminated_once(dag, ready: Callable[[], bool]):
    """``run_dag`` of ``dag``, sending this process a SIGTERM once ``ready()`` (the task runs in this process
    under dag.test(): Airflow calls the operator's ``on_kill``)."""

    def terminate_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    terminator = threading.Thread(target=terminate_when_ready, daemon=True)
    terminator.start()
    try:
        return run_dag(dag, DAY)
    finally:
        terminator.join()
        signal.signal(signal.SIGTERM, handler)


def test_a_task_asked_to_stop_while_waiting_for_altcraft_tasks_stops_waiting(dag_with, emulator, scenario_id):
    """SIGTERM while a non-deferrable ``async`` task waits for its Altcraft task: the wait ends (the task
    stays in the try's book; the next try re-attaches to it) and the try fails saying so. It waited out
    Altcraft's task and turned green."""
    emulator.config(task_delay_seconds=30)
    dag = dag_with(contacts(4), delivery="async", deferrable=False, poll_interval=0.2, batch_size=4)
    dag_run = run_terminated_once(dag, lambda: bool(emulator.state()["tasks"]))
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert {task["status"] for task in emulator.state()["tasks"]} == {"queued"}, "it did not wait it out"
    assert not launch_counts(emulator, scenario_id)
    summary = xcom_values(dag.dag_id, dag_run.run_id, key="altcraft_summary")["import_and_launch", -1]
    assert (summary["found"], summary["pending"], summary["launched"]) == (4, 4, 0)


def _statuses(scenario_id: int) -> Counter:
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        query = "SELECT status FROM altcraft_contacts WHERE scenario_id = :s"
        statuses = Counter(conn.execute(sa.text(query), {"s": scenario_id}).scalars())
    engine.dispose()
    return statuses


def test_a_reconciliation_stopped_part_way_keeps_what_it_decided(dag_with, emulator, marker_scenario):
    """Six contacts are uncertain (their batch processed, its answer lost); a reconciliation run reads their
    profiles at a second each and is stopped by its 3 s execution_timeout part-way. The verdicts it reached
    are recorded (they were all lost: every contact stayed uncertain, so a backlog longer than the timeout
    was never reconciled), and the next reconciliation decides the rest; nobody is launched twice."""
    emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "count": 1})
    first = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER)
    assert task_states(run_dag(first, DAY)) == {"import_and_launch": "failed"}
    emulator.add_faults({"endpoint": "profiles/get", "kind": "latency", "latency_ms": 1000, "count": 6})

    stopped = dag_with([], launch_marker_field=MARKER, reconcile=True, execution_timeout_seconds=3)
    dag_run = run_dag(stopped, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}
    decided = _statuses(marker_scenario)["launched"]
    assert 1 <= decided < 6, "stopped part-way, with what it read recorded"
    summary = xcom_values(stopped.dag_id, dag_run.run_id, key="altcraft_summary")["import_and_launch", -1]
    assert summary["reconciled"] == {"launched": decided, "not_processed": 0, "uncertain": 0, "deferred": 0}
    again = dag_with([], dag_id="welcome_again", launch_marker_field=MARKER, reconcile=True)
    dag_run = run_dag(again, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = xcom_values(again.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert summary["reconciled"] == {
        "launched": 6 - decided,
        "not_processed": 0,
        "uncertain": 0,
        "deferred": 0,
    }
    assert _statuses(marker_scenario) == {"launched": 6}
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 6


def test_dry_run_sends_nothing(dag_with, emulator, scenario_id):
    dag = dag_with(contacts(4), dry_run=True)
    dag_run = run_dag(dag, DAY)
    summary = xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert summary["dry_run"] is True and summary["launched"] == 4
    assert not launch_counts(emulator, scenario_id)


def _output(capfd) -> str:
    """What the task printed (task logs go to stdout through structlog, not to pytest's caplog)."""
    captured = capfd.readouterr()
    return captured.out + captured.err


def test_async_retry_reattaches_to_submitted_tasks(dag_with, emulator, scenario_id):
    """The first try's wait times out; the retry finds the task ids in task_state_store and settles them
    as try 1's outcomes. On a loaded machine a retry's wait may time out too, and the next retry settles
    what is left: which retry settled a task varies, that try 1 launched all 8 does not."""
    emulator.config(task_delay_seconds=2)
    dag = dag_with(
        contacts(8),
        delivery="async",
        batch_size=4,
        poll_interval=0.2,
        task_timeout=1,
        retries=4,
        retry_delay=0,
    )
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert (summary["found"], summary["skipped"], summary["requests"]) == (8, 8, 0)
    assert summary["launched"] == 0 and 1 <= summary["earlier_tries"]["launched"] <= 8, "settled for try 1"
    launches = {
        key: n for key, n in _outcome_tries(dag.dag_id, dag_run.run_id).items() if key[0] == "launched"
    }
    assert launches == {("launched", 1): 8}, "all recorded as try 1's"
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8
    assert len(emulator.state()["tasks"]) == 2, "the retry re-attached instead of submitting again"


def _outcome_tries(dag_id: str, run_id: str) -> Counter:
    """The run's outcome rows in the ledger, counted by (outcome, try_number)."""
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        query = "SELECT outcome, try_number FROM altcraft_outcomes WHERE dag_id = :d AND run_id = :r"
        tries = Counter(tuple(row) for row in conn.execute(sa.text(query), {"d": dag_id, "r": run_id}))
    engine.dispose()
    return tries


@pytest.mark.parametrize("deferrable", [True, False])
def test_async_tasks_altcraft_no_longer_knows_settle_their_contacts_uncertain(
    dag_with, emulator, scenario_id, deferrable
):
    """``tasks/status`` answers 404 for the stored task ids (expired at Altcraft): the wait ends at once and
    the contacts become uncertain (the tasks may have run), where every try failed and left them sending."""
    emulator.add_faults({"endpoint": "tasks/status", "kind": "status", "status": 404})
    dag = dag_with(
        contacts(8),
        delivery="async",
        batch_size=4,
        poll_interval=0.1,
        task_timeout=20,
        deferrable=deferrable,
        retries=1,
        retry_delay=0,
    )
    started = time.monotonic()
    dag_run = run_dag(dag, DAY)
    assert time.monotonic() - started < 15, "no wait for a task that is gone"
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    summary = xcom_values(dag.dag_id, dag_run.run_id, key="altcraft_summary")["import_and_launch", -1]
    assert (summary["uncertain"], summary["pending"], summary["requests"]) == (8, 0, 2)
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.text("SELECT status FROM altcraft_contacts WHERE scenario_id = :sid"), {"sid": scenario_id}
        ).scalars()
        assert sorted(statuses) == ["uncertain"] * 8
    engine.dispose()
    assert len(emulator.state()["tasks"]) == 2, "nothing was submitted again"


def test_async_without_deferring_waits_for_the_tasks_in_the_worker(dag_with, emulator, scenario_id, capfd):
    emulator.config(task_delay_seconds=0.3)
    dag = dag_with(contacts(8), delivery="async", batch_size=4, poll_interval=0.1, deferrable=False)
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1]
    assert (summary["launched"], summary["pending"], summary["requests"]) == (8, 0, 2)
    assert summary["earlier_tries"]["launched"] == 0, "settled by the try that submitted them"
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8
    assert "DEFERRED" not in _output(capfd), "the wait happened in the worker, not in the triggerer"


def test_default_ledger_comes_from_airflow_config(dag_with, emulator, scenario_id, monkeypatch):
    import sqlalchemy as sa

    from altcraft.ledger import Ledger, Scope

    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "ledger_pg")
    dag = dag_with(contacts(3), ledger_conn_id=None)
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "success"}
    states = Ledger(sa.create_engine(PG_URL)).contact_states(
        Scope(platform=emulator.url, scenario_id=scenario_id)
    )
    assert sorted(states.values()) == ["launched"] * 3


@pytest.fixture
def paid_table():
    """A PostgreSQL table of one contact paid at the naive time 2026-03-01 10:00."""
    table = f"op_paid_{os.getpid()}_{time.monotonic_ns()}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER, email TEXT, paid TIMESTAMP)")
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 'paid.person@example.org', '2026-03-01 10:00')")
    yield table
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()


#: A mapping writing date-times in Moscow that reads the naive ``paid`` of the source.
MOSCOW_PAID = {
    "matching": "email",
    "key": {"email": "email"},
    "timezone": "Europe/Moscow",
    "fields": {"_regdate": {"source": "paid", "type": "datetime"}},
}
ZONE_MOVED = r"the `timezone` of `source` is not set while the `timezone` of `mapping` is Europe/Moscow"


def test_a_mapping_zone_over_a_source_given_none_is_an_import_error_of_the_dag_file(dag_with, paid_table):
    """A source given no timezone reads its naive times as UTC, not in the mapping's zone: as in a spec
    (`naive_times_moved`), the operator refuses it where its mapping reads a date-time from the source, and
    the hand-written DAG file does not load, its error naming both arguments and the field."""
    from airflow.dag_processing.dagbag import DagBag

    source = {"conn_id": "ledger_pg", "sql": f"SELECT id, email, paid FROM {paid_table}"}
    with pytest.raises(ValueError, match=ZONE_MOVED):
        dag_with(None, sql_source=source, mapping=MOSCOW_PAID)
    bag = DagBag(dag_folder=Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / DAG_FILE.name)
    (error,) = bag.import_errors.values()
    assert "`mapping` fields _regdate" in error and "Set the `timezone` of `source`" in error


def test_a_mapped_task_over_a_source_given_no_zone_fails_before_any_request(
    dag_with, emulator, scenario_id, paid_table
):
    """A mapped task's operator is built when the task runs: the same refusal fails it there, before
    anything is read or sent."""
    source = {"conn_id": "ledger_pg", "sql": f"SELECT id, email, paid FROM {paid_table}"}
    dag = dag_with(None, sql_source=source, mapping=MOSCOW_PAID, expand={"batch_size": [100]})
    dag_run = run_dag(dag, DAY)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert emulator.journal(scenario_id) == []
    assert not [p for p in emulator.profiles() if p["fields"].get("email") == "paid.person@example.org"]


@pytest.mark.parametrize(
    ("zone", "sent"), [("UTC", "2026-03-01T13:00:00+03:00"), ("Europe/Moscow", "2026-03-01T10:00:00+03:00")]
)
@pytest.mark.parametrize("expand", [None, {"batch_size": [100]}])
def test_a_source_naming_its_zone_runs_under_a_mapping_naming_another(
    dag_with, emulator, scenario_id, paid_table, zone, sent, expand
):
    """With the source's zone given, its naive 10:00 is read in it and written in the mapping's."""
    source = {"conn_id": "ledger_pg", "sql": f"SELECT id, email, paid FROM {paid_table}", "timezone": zone}
    dag = dag_with(None, sql_source=source, mapping=MOSCOW_PAID, expand=expand)
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "success"}
    (profile,) = [p for p in emulator.profiles() if p["fields"].get("email") == "paid.person@example.org"]
    assert profile["fields"]["_regdate"] == sent
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1]
