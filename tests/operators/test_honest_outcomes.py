"""Issue #12, honest outcomes: each test below reproduces one bullet of the issue in real Airflow.

Every try's counts add up, carried state is visible, nothing partial looks green, dry runs leave no
trace, uncertain contacts are reconciled from Altcraft's own answers, and combined matching modes have
one identity. Runs use ``dag.test()`` against the emulator and a PostgreSQL ledger.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa

from altcraft.testing import CONNECTION_ENV
from tests.airflow_helpers import asset_event_extras, install_dag, run_dag, task_states, xcom_values
from tests.clock import set_clock_off
from tests.conftest import FAST

from .conftest import EMAIL_MAPPING, MARKER, PG_URL, contacts, launch_counts

DAG_FILE = Path(__file__).parent / "dag_files" / "outcomes_contacts.py"
DAY = pendulum.datetime(2026, 3, 1, tz="UTC")
COUNTERS = ("launched", "skipped", "rejected", "failed", "uncertain")
BATCH = "workflows/import_and_start_batch"
TASK = "workflows/import_and_start_batch_task"
SUMMARY_KEY = "altcraft_summary"


@pytest.fixture
def ledger_conn(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_PG", PG_URL.replace("postgresql+psycopg2", "postgresql"))
    return "ledger_pg"


@pytest.fixture
def dag_with(airflow_db, emulator, scenario_id, ledger_conn):
    def build(records, dag_id="outcomes_test", on_failure=None, source=None, **operator):
        config = {
            "dag_id": dag_id,
            "contacts": records,
            "on_failure": on_failure,
            "source": source,
            "operator": {
                "scenario_id": scenario_id,
                "mapping": EMAIL_MAPPING,
                "ledger_conn_id": ledger_conn,
                **operator,
            },
        }
        return install_dag(DAG_FILE, config, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))

    return build


def outcome_rows(scenario_id: int, dag_id: str = "outcomes_test") -> list[tuple[int, str | None, str]]:
    """(try_number, contact_hash, outcome) of every ledger outcome of the DAG in this scenario."""
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT try_number, contact_hash, outcome FROM altcraft_outcomes "
                "WHERE scenario_id = :sid AND dag_id = :dag ORDER BY id"
            ),
            {"sid": scenario_id, "dag": dag_id},
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def contact_statuses(scenario_id: int) -> Counter:
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status FROM altcraft_contacts WHERE scenario_id = :sid"), {"sid": scenario_id}
        ).scalars()
        statuses = Counter(rows)
    engine.dispose()
    return statuses


def uncertain_notes(scenario_id: int) -> list[str]:
    """The ``error_text`` of the scenario's uncertain contacts."""
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        notes = conn.execute(
            sa.text(
                "SELECT error_text FROM altcraft_contacts WHERE scenario_id = :sid AND status = 'uncertain'"
            ),
            {"sid": scenario_id},
        ).scalars()
        found = list(notes)
    engine.dispose()
    assert found, "no uncertain contact"
    return found


def assert_one_row_per_contact_per_try(rows) -> None:
    per_try = Counter((try_number, contact) for try_number, contact, _ in rows if contact is not None)
    doubled = {key: n for key, n in per_try.items() if n > 1}
    assert not doubled, f"contacts with more than one outcome in one try: {doubled}"


def assert_adds_up(summary: dict) -> None:
    assert summary["found"] == sum(summary[k] for k in COUNTERS), summary


def summary_of(dag, dag_run) -> dict:
    """The summary the last try left in XCom: pushed whether the try succeeded or failed."""
    values = xcom_values(dag.dag_id, dag_run.run_id, key=SUMMARY_KEY)
    values = values or xcom_values(dag.dag_id, dag_run.run_id)
    return values["import_and_launch", -1]


# ------------------------------------------------------------------------------ 1. counts that add up


def test_async_retry_after_a_refused_submission_counts_each_contact_once_per_try(
    dag_with, emulator, scenario_id
):
    """10 contacts, batch_size=5, a 503 on the second task submission, retries=1 (issue #12, bullet 1).

    Try 2 settles try 1's task on its behalf (reported apart, recorded as try 1's outcomes) and then
    decides each of its own 10 inputs exactly once.
    """
    emulator.add_faults({"endpoint": TASK, "kind": "status", "status": 503, "every": 2, "count": 1})
    dag = dag_with(contacts(10), delivery="async", batch_size=5, poll_interval=0.1, retries=1, retry_delay=0)
    dag_run = run_dag(dag, DAY)

    summary = summary_of(dag, dag_run)
    assert summary["found"] == 10
    assert_adds_up(summary)
    assert summary["earlier_tries"]["launched"] == 5, "try 1's task, settled by try 2, reported apart"
    assert_one_row_per_contact_per_try(outcome_rows(scenario_id))
    assert set(launch_counts(emulator, scenario_id).values()) == {1}


# ----------------------------------------------------------------------- 1b. the dry run predicts


def test_dry_run_predicts_the_real_run_across_chunks(dag_with, emulator, scenario_id):
    """One person spelled twice in different chunks: the dry run says what the real run then does."""
    people = [
        {"id": 1, "email": "Anna@example.org", "first_name": "Anna"},
        {"id": 2, "email": "anna@example.org", "first_name": "Anna"},
        *contacts(3, start=10),
    ]
    dry = dag_with(people, dag_id="outcomes_dry", batch_size=1, dry_run=True)
    predicted = xcom_values(dry.dag_id, run_dag(dry, DAY).run_id)["import_and_launch", -1]
    real = dag_with(people, dag_id="outcomes_real", batch_size=1)
    done = xcom_values(real.dag_id, run_dag(real, DAY).run_id)["import_and_launch", -1]

    assert {k: predicted[k] for k in ("found", *COUNTERS)} == {k: done[k] for k in ("found", *COUNTERS)}
    assert done["launched"] == 4 and done["skipped"] == 1
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 4


def open_connections() -> int:
    """This process's open connections to the ledger's PostgreSQL server (the tasks run in it under
    dag.test()); the server's own count would include those of other suites sharing it."""
    import psutil

    port = sa.make_url(PG_URL).port or 5432
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


@pytest.mark.parametrize("delivery", ["batch", "async"])
def test_a_try_leaves_no_connection_of_its_ledger_open(dag_with, emulator, delivery):
    """Each try made a ledger engine and never closed it: a process running tries one after another (dag.test,
    a worker running tasks in-process) kept its pooled connections until PostgreSQL refused new clients."""
    dag = dag_with(
        contacts(6), dag_id=f"closed_{delivery}", delivery=delivery, batch_size=3, poll_interval=0.1
    )
    before = open_connections()
    for day in range(3):
        assert task_states(run_dag(dag, DAY + timedelta(days=day)))["import_and_launch"] == "success"
    assert open_connections() <= before


# -------------------------------------------------------------------- 2. carried state is visible


def test_contacts_left_uncertain_stay_visible_in_later_runs(dag_with, emulator, scenario_id):
    """Try 1 loses Altcraft's answer (processed, no marker to prove it); the rerun does not go green."""
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    dag = dag_with(contacts(8), batch_size=8)
    first = run_dag(dag, DAY)
    assert task_states(first) == {"import_and_launch": "failed"}

    second = run_dag(dag, DAY)  # the window again (dag.test() clears it)
    summary = summary_of(dag, second)
    assert task_states(second) == {"import_and_launch": "failed"}, "8 contacts are still uncertain"
    assert summary["uncertain"] == 8
    assert summary["scope"] == {"uncertain": 8, "failed": 0, "stale_sending": 0}
    assert_adds_up(summary)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8, "nobody resent blindly"


# ------------------------------------------------------------------- 4. nothing partial looks green


def test_contacts_refused_by_altcraft_fail_the_task_and_notify(dag_with, emulator, scenario_id, capfd):
    """1 of 20 refused is below max_rejected_ratio, yet the run is not a clean success."""
    from tests.pipelines import notify

    notify.CALLS.clear()
    emulator.add_faults(
        {"endpoint": BATCH, "kind": "profile_error", "every": 7, "count": 1, "code": 400, "text": "bad field"}
    )
    dag = dag_with(contacts(20), batch_size=10, on_failure="tests.pipelines.notify:record")
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}
    summary = summary_of(dag, dag_run)
    assert (summary["launched"], summary["failed"]) == (19, 1)
    assert summary["scope"]["failed"] == 1
    output = capfd.readouterr().out
    assert "1 contact(s) were refused by Altcraft" in output
    assert "next run sends them again" in output, "the message says what to do next"
    assert [call[0] for call in notify.CALLS] == ["callback"], "the failure notification was sent"


def logged_standings(output: str) -> list[dict[str, int]]:
    """Every ``scenario now: uncertain U, failed F, stale_sending S`` line of the task log's summary
    tables."""
    line = r"scenario now: uncertain (\d+), failed (\d+), stale_sending (\d+)"
    return [
        {"uncertain": int(u), "failed": int(f), "stale_sending": int(s)}
        for u, f, s in re.findall(line, output)
    ]


def test_the_logged_summary_states_the_standing_after_the_try(dag_with, emulator, scenario_id, capfd):
    """The log's "scenario now" line is read after the try's outcomes are written, as the XCom's scope."""
    emulator.add_faults(
        {"endpoint": BATCH, "kind": "profile_error", "every": 7, "count": 3, "code": 400, "text": "bad"}
    )
    dag = dag_with(contacts(20), batch_size=10)
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}
    summary = summary_of(dag, dag_run)
    assert summary["failed"] == 2, "the 7th and 14th profiles"
    assert summary["scope"] == {"uncertain": 0, "failed": 2, "stale_sending": 0}
    output = capfd.readouterr().out
    assert "Altcraft delivery summary" in output
    assert logged_standings(output) == [summary["scope"]], "one final table, with the real standing"


def test_a_dry_run_and_a_deferred_try_report_the_standing_they_found(dag_with, emulator, scenario_id, capfd):
    """Contacts refused by an earlier run stay in the scenario's standing: a dry run and an async try's
    table before it defers say so, instead of zeros never read from the ledger."""
    emulator.add_faults({"endpoint": BATCH, "kind": "profile_error", "every": 7, "count": 1, "code": 400})
    run_dag(dag_with(contacts(10), dag_id="outcomes_refused", batch_size=10), DAY)
    standing = {"uncertain": 0, "failed": 1, "stale_sending": 0}
    capfd.readouterr()

    dry = dag_with(contacts(5, start=100), dag_id="outcomes_dry_standing", dry_run=True)
    assert summary_of(dry, run_dag(dry, DAY))["scope"] == standing
    assert logged_standings(capfd.readouterr().out) == [standing]

    later = dag_with(
        contacts(5, start=200), dag_id="outcomes_async_standing", delivery="async", poll_interval=0.1
    )
    dag_run = run_dag(later, DAY)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert summary_of(later, dag_run)["scope"] == standing
    assert logged_standings(capfd.readouterr().out) == [standing, standing], (
        "before deferring, and at the end"
    )


def breaking_source(window=None, n: int = 10, fail_after: int | None = None):
    """`PythonSource` callable: ``contacts(n)``, the connection lost after ``fail_after`` of them."""
    for index, record in enumerate(contacts(n)):
        if index == fail_after:
            raise ConnectionError("the CRM connection was lost")
        yield record


def test_a_source_failing_midway_leaves_no_claimed_contact_unsent_and_uncounted(
    dag_with, emulator, scenario_id
):
    """The source breaks off while a chunk is claimed but not yet sent: that chunk is recorded failed (it
    was never sent), the counts add up, and the next run sends it; nothing is left ``sending``, which
    would make it uncertain (never resent automatically) or in flight forever."""
    callable_path = f"{__name__}:breaking_source"
    broken = dag_with(None, batch_size=2, source={"callable": callable_path, "kwargs": {"fail_after": 5}})
    dag_run = run_dag(broken, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}
    summary = summary_of(broken, dag_run)
    assert_adds_up(summary)
    assert summary["failed"] > 0, "the claimed chunk that was never sent"
    assert list(summary["reasons"]) == ["not sent: the run stopped (SourceError)"], "no API None"
    assert "sending" not in contact_statuses(scenario_id)

    fixed = dag_with(None, dag_id="outcomes_fixed", batch_size=2, source={"callable": callable_path})
    again = run_dag(fixed, DAY)
    assert task_states(again) == {"import_and_launch": "success"}
    assert contact_statuses(scenario_id) == {"launched": 10}
    counts = launch_counts(emulator, scenario_id)
    assert len(counts) == 10 and set(counts.values()) == {1}


def skipping_source(window=None):
    """`PythonSource` callable that asks Airflow to skip the task (nothing new upstream, say)."""
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException("the CRM export is not ready")
    yield  # a generator, as a source callable may be


def test_a_source_asking_airflow_to_skip_skips_the_task(dag_with, emulator, scenario_id):
    """Airflow's own control exceptions from a source pass through unchanged (not made a SourceError)."""
    dag = dag_with(None, source={"callable": f"{__name__}:skipping_source"})
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "skipped"}


def source_failing_itself(window=None):
    """`PythonSource` callable raising a `SourceError` that names the source, as sources' own errors do."""
    from altcraft.sources import SourceError

    raise SourceError(f"python {__name__}:source_failing_itself: the CRM refused the export")
    yield


def test_a_source_error_naming_its_source_is_not_prefixed_twice(dag_with, emulator, scenario_id, capfd):
    name = f"python {__name__}:source_failing_itself"
    dag = dag_with(None, source={"callable": f"{__name__}:source_failing_itself"})
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "failed"}
    output = capfd.readouterr().out
    assert f"SourceError: {name}: the CRM refused the export" in output
    assert f"{name}: {name}" not in output


def test_a_failed_threshold_lets_a_run_with_refusals_succeed(dag_with, emulator, scenario_id):
    emulator.add_faults({"endpoint": BATCH, "kind": "profile_error", "every": 7, "count": 1, "code": 400})
    dag = dag_with(contacts(20), batch_size=10, max_failed_ratio=0.1)
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "success"}


def not_clean(output: str) -> str:
    """What the warning after a green try's last summary table says it left undone."""
    after = output[output.rindex("Altcraft delivery summary") :]
    found = re.search(r"\[warning\s*\] Not a clean run: (.*)", after)
    assert found, f"no warning after the summary table:\n{after}"
    return found.group(1)


def test_a_run_green_within_its_ratios_ends_its_log_saying_what_it_left_undone(
    dag_with, emulator, scenario_id, capfd
):
    """A rejected and a refused contact within max_rejected_ratio / max_failed_ratio: the try succeeds, and
    its log ended with the summary table at INFO, like any clean run's."""
    emulator.add_faults({"endpoint": BATCH, "kind": "profile_error", "every": 7, "count": 1, "code": 400})
    records = [*contacts(19), {"id": 999, "email": "broken"}]
    dag = dag_with(records, batch_size=10, max_failed_ratio=0.1)
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = summary_of(dag, dag_run)
    assert (summary["launched"], summary["rejected"], summary["failed"]) == (18, 1, 1)
    warning = not_clean(capfd.readouterr().out)
    assert "1 rejected" in warning and "1 refused by Altcraft" in warning, warning


def claim_elsewhere(scenario_id: int, records: list[dict]) -> None:
    """Claim ``records`` in the ledger for another pipeline's run, which is still sending them."""
    from altcraft.delivery import Delivery
    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.ledger import Ledger
    from altcraft.mapping import ProfileMapping

    from .conftest import run_ref

    hook = AltcraftHook()
    hook.get_conn()
    ledger = Ledger(sa.create_engine(PG_URL))
    other = Delivery.create(
        hook,
        ledger,
        run_ref(run_id="another-run", dag_id="another_pipeline"),
        scenario_id=scenario_id,
        mapping=ProfileMapping.model_validate(EMAIL_MAPPING),
        key_column="id",
    )
    profiles = [other.mapper.map(record) for record in records]
    claim = other.session.claim([(p.ledger_key, p.source_key) for p in profiles], other.policy)
    assert len(claim.to_send) == len(records)
    ledger.close()


def test_contacts_in_flight_in_another_run_are_counted_apart_and_warned_of(
    dag_with, emulator, scenario_id, capfd
):
    """3 of 8 contacts were being sent by another run, whose outcome for them is not known yet: this green
    try counted them as plain "skipped", as if already launched, in its summary, its log and its asset
    event, and said nothing of them (a source without a position gave not even the position's warning)."""
    claim_elsewhere(scenario_id, contacts(3))
    dag = dag_with(contacts(8))
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = summary_of(dag, dag_run)
    assert (summary["launched"], summary["skipped"], summary["in_flight_elsewhere"]) == (5, 3, 3)
    extra = asset_event_extras(f"altcraft://altcraft_default/scenarios/{scenario_id}")[-1]
    assert (extra["skipped"], extra["in_flight_elsewhere"]) == (3, 3)
    output = capfd.readouterr().out
    assert "of which in flight in another run: 3" in output[output.rindex("Altcraft delivery summary") :]
    assert not_clean(output).startswith("3 in flight in another run, skipped: that run's outcome decides")
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5, "none of the 3 sent twice"


# ---------------------------------------------------------------------- 3. automatic reconciliation


def test_reconciliation_resends_exactly_the_unprocessed_contacts(dag_with, emulator, marker_scenario):
    """Try 1's answer is lost after processing, try 2's before: try 3 ends with everyone launched once.

    The emulator never runs a request it dropped before processing, so no grace is needed here
    (``reconcile_grace=0``): try 3 reads the profiles at once."""
    emulator.add_faults(
        {"endpoint": BATCH, "kind": "drop_after", "count": 1},
        {"endpoint": BATCH, "kind": "drop_before", "count": 1},
    )
    dag = dag_with(
        contacts(16), batch_size=8, launch_marker_field=MARKER, reconcile_grace=0, retries=2, retry_delay=0
    )
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "success"}
    counts = launch_counts(emulator, marker_scenario)
    assert len(counts) == 16 and set(counts.values()) == {1}, "the processed 8 were not resent"
    summary = summary_of(dag, dag_run)
    assert (summary["launched"], summary["skipped"], summary["uncertain"]) == (8, 8, 0)
    assert summary["scope"] == {"uncertain": 0, "failed": 0, "stale_sending": 0}
    assert contact_statuses(marker_scenario) == {"launched": 16}
    assert_one_row_per_contact_per_try(outcome_rows(marker_scenario))
    markers = {p["fields"].get(MARKER) for p in emulator.profiles(db_id=marker_scenario)}
    assert None not in markers, "every launching request carried the marker"


@pytest.mark.parametrize(
    ("grace", "launches"),
    [(None, 1), (0, 2)],
    ids=["default grace: still uncertain, launched once", "no grace: judged not processed, launched twice"],
)
def test_reconciliation_waits_for_a_timed_out_batch_that_altcraft_may_still_be_processing(
    dag_with, emulator, marker_scenario, monkeypatch, grace, launches
):
    """Try 1's batch takes Altcraft 3 s; the client gives up after 1 s. Try 2 starts at once and reads
    the profiles while Altcraft is still processing that batch: no marker and no profile yet. Within the
    grace (ten minutes by default) that proves nothing, so nobody is sent again and the batch, once
    processed, has launched everyone once. Without a grace, the same reading is "not processed": try 2
    sends them again and each contact is launched twice, which is what the grace is for."""
    monkeypatch.setenv(CONNECTION_ENV, emulator.connection_json(**{**FAST, "timeout": 1}))
    emulator.add_faults({"endpoint": BATCH, "kind": "latency", "latency_ms": 3000, "count": 1})
    dag = dag_with(
        contacts(6),
        batch_size=6,
        launch_marker_field=MARKER,
        retries=1,
        retry_delay=0,
        **({} if grace is None else {"reconcile_grace": grace}),
    )
    dag_run = run_dag(dag, DAY)

    summary = summary_of(dag, dag_run)
    if grace is None:
        assert task_states(dag_run) == {"import_and_launch": "failed"}, "uncertain contacts are not green"
        assert summary["reconciled"] == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
        assert (summary["requests"], summary["uncertain"]) == (0, 6)
    else:
        assert summary["reconciled"]["not_processed"] == 6
    assert wait_for_launches(emulator, marker_scenario, 6 * launches, 10) == [launches] * 6


def wait_for_launches(emulator, scenario_id: int, at_least: int, seconds: float) -> list[int]:
    """The scenario's launch counts per profile, once ``at_least`` launches were made (or ``seconds`` passed),
    and a moment more for any launch still on its way."""
    deadline = time.monotonic() + seconds
    while sum(launch_counts(emulator, scenario_id).values()) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    return sorted(launch_counts(emulator, scenario_id).values())


def test_a_worker_whose_clock_is_behind_does_not_make_a_request_in_flight_look_old(
    dag_with, emulator, marker_scenario, monkeypatch
):
    """Run 1's worker clock is half an hour behind; its batch takes Altcraft 15 s behind a 1 s client
    timeout. Run 2, on a worker with the right clock, reconciles at once, while Altcraft still processes
    that batch. Its rows' times were written by the worker's clock, so the answer looked lost 30 minutes
    ago, past the 10-minute grace: "not processed", sent again, launched twice. The ledger's database
    clock writes and compares every time now: lost a few seconds ago, still uncertain, launched once."""
    monkeypatch.setenv(CONNECTION_ENV, emulator.connection_json(**{**FAST, "timeout": 1}))
    emulator.add_faults({"endpoint": BATCH, "kind": "latency", "latency_ms": 15000, "count": 1})
    dag = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER)
    set_clock_off(monkeypatch, -timedelta(minutes=30))
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "failed"}
    set_clock_off(monkeypatch, timedelta(0))

    dag_run = dag.test(logical_date=DAY + timedelta(days=1), run_conf={"reconcile": True})

    summary = summary_of(dag, dag_run)
    assert summary["reconciled"] == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
    assert (summary["requests"], summary["uncertain"]) == (0, 6)
    assert contact_statuses(marker_scenario) == {"uncertain": 6}
    assert wait_for_launches(emulator, marker_scenario, 6, 20) == [1] * 6


@pytest.mark.parametrize(
    ("grace", "launches"),
    [(None, 1), (0, 2)],
    ids=["default grace: kept uncertain, launched once", "no grace: resent at once, launched twice"],
)
def test_resend_uncertain_as_a_run_parameter_waits_for_the_grace(
    dag_with, emulator, marker_scenario, grace, launches
):
    """Run 1's batch is processed and its answer lost (the connection dropped after): uncertain. Run 2 is
    started at once with ``resend_uncertain`` in its conf, as the Altcraft page's action would be refused
    (409) then: Altcraft may still be processing such a request. It resent them anyway, and each contact
    was launched twice. Now the run parameter keeps the same grace: they stay uncertain, each outcome
    saying from when a resend is possible, and the run fails saying they are undecided. With no grace it
    resends, which is what ``resend_uncertain`` is for."""
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    dag = dag_with(
        contacts(6),
        batch_size=6,
        resend_uncertain="{{ (dag_run.conf or {}).get('resend_uncertain', False) }}",  # as a pipeline's param
        **({} if grace is None else {"reconcile_grace": grace}),
    )
    assert task_states(run_dag(dag, DAY)) == {"import_and_launch": "failed"}

    dag_run = dag.test(logical_date=DAY + timedelta(days=1), run_conf={"resend_uncertain": True})

    summary = summary_of(dag, dag_run)
    if grace is None:
        assert task_states(dag_run) == {"import_and_launch": "failed"}, "contacts left uncertain"
        assert (summary["requests"], summary["uncertain"], summary["launched"]) == (0, 6, 0)
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            reasons = conn.execute(
                sa.text("SELECT reason FROM altcraft_outcomes WHERE scenario_id = :sid AND run_id = :run"),
                {"sid": marker_scenario, "run": dag_run.run_id},
            ).scalars()
            assert all(
                "within the reconciliation grace" in reason and "resend from" in reason for reason in reasons
            )
        engine.dispose()
    else:
        assert (summary["requests"], summary["launched"]) == (1, 6)
    assert wait_for_launches(emulator, marker_scenario, 6 * launches, 5) == [launches] * 6


def test_reconciliation_never_resends_an_async_task_that_may_still_be_queued(
    dag_with, emulator, marker_scenario
):
    """Try 1's task submission is answered into a dropped connection; the task runs seconds later. Try 2
    reads the profiles before it has: no marker yet is no evidence, so nothing is sent again."""
    emulator.config(tasks_held=True)  # queued until try 2 has read the profiles
    emulator.add_faults({"endpoint": TASK, "kind": "drop_after", "count": 1})
    dag = dag_with(
        contacts(6), batch_size=6, delivery="async", launch_marker_field=MARKER, retries=1, retry_delay=0
    )
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "failed"}, "uncertain contacts are not green"
    summary = summary_of(dag, dag_run)
    assert summary["reconciled"] == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
    assert (summary["requests"], summary["uncertain"]) == (0, 6)
    assert contact_statuses(marker_scenario) == {"uncertain": 6}
    assert [task["status"] for task in emulator.state()["tasks"]] == ["queued"], "the task had not run yet"
    emulator.config(tasks_held=False)
    deadline = time.monotonic() + 10
    while len(launch_counts(emulator, marker_scenario)) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 6, "launched once, by try 1"


def test_a_batch_pipeline_never_resends_what_an_async_pipeline_may_still_have_queued(
    dag_with, emulator, marker_scenario
):
    """Two pipelines into one scenario: the async one's task submission is answered into a dropped
    connection and its task runs later; the batch one, meeting those contacts before the task has run,
    judges them by how they were sent (an Altcraft task, maybe still queued), not by its own batch mode
    (by which no profile meant "not processed": it sent them again, and the task launched them twice)."""
    emulator.config(tasks_held=True)  # queued until the batch pipeline has met the contacts
    emulator.add_faults({"endpoint": TASK, "kind": "drop_after", "count": 1})
    people = contacts(6)
    sender = dag_with(people, dag_id="outcomes_async", delivery="async", launch_marker_field=MARKER)
    assert task_states(run_dag(sender, DAY)) == {"import_and_launch": "failed"}

    other = dag_with(people, dag_id="outcomes_batch", launch_marker_field=MARKER)
    dag_run = run_dag(other, DAY)

    assert [task["status"] for task in emulator.state()["tasks"]] == ["queued"], "the task had not run yet"
    assert launch_counts(emulator, marker_scenario) == {}, "the batch pipeline sent nobody"
    summary = summary_of(other, dag_run)
    assert summary["reconciled"] == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
    assert task_states(dag_run) == {"import_and_launch": "failed"}, "6 contacts are uncertain"
    emulator.config(tasks_held=False)
    deadline = time.monotonic() + 20
    while len(launch_counts(emulator, marker_scenario)) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 6, "launched once, by the task"


def async_try_gives_up_hours_ago(dag_with, emulator, scenario_id: int, people: list[dict]) -> None:
    """An async try that gave up waiting for its Altcraft task (task_timeout, no retry left): its contacts
    stay sending, the task id in that task instance's state and the ledger; the task launches them. Then
    hours pass: the claim is stale (the ledger's stale_after is 6 h)."""
    emulator.config(tasks_held=True)  # still queued when the try gives up waiting
    sender = dag_with(
        people,
        dag_id="outcomes_async",
        delivery="async",
        deferrable=False,
        task_timeout=0.5,
        poll_interval=0.1,
    )
    assert task_states(run_dag(sender, DAY)) == {"import_and_launch": "failed"}
    emulator.config(tasks_held=False)
    deadline = time.monotonic() + 20
    while len(launch_counts(emulator, scenario_id)) < len(people) and time.monotonic() < deadline:
        time.sleep(0.2)
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE altcraft_contacts SET claimed_at = claimed_at - INTERVAL '7 hours', "
                "updated_at = updated_at - INTERVAL '7 hours' WHERE scenario_id = :sid AND status = 'sending'"
            ),
            {"sid": scenario_id},
        )
    engine.dispose()


def without_database(_body: dict, answer: dict, status: int) -> tuple[int, dict]:
    """A ``workflows/list`` answer naming no scenario's database (``list_id``)."""
    scenarios = [{k: v for k, v in s.items() if k not in ("list_id", "db_id")} for s in answer["data"]]
    return status, answer | {"data": scenarios}


@pytest.mark.parametrize("database", ["named", "unknown"])
def test_a_dead_tries_altcraft_task_decides_the_contacts_when_another_pipeline_first_meets_them(
    dag_with, emulator, scenario_id, request, database
):
    """An async try gave up waiting for its Altcraft task (task_timeout, no retry left): its contacts stay
    sending, the task id in that task instance's state and the ledger, and the task launches them later.
    Hours later another pipeline meets the claim stale. It made the 6 uncertain without reading the task and
    failed; only a later reconciling run read the task. Now the run that meets them reads it first: 6
    launched, nobody sent twice, the run green. The same when Altcraft's scenario names no database and no
    db_id is set (the answer proxy strips it): such a run reconciled nothing, though reading a task needs
    no database."""
    if database == "unknown":
        request.getfixturevalue("proxy").rewrite["workflows/list"] = without_database
    people = contacts(6)
    async_try_gives_up_hours_ago(dag_with, emulator, scenario_id, people)

    other = dag_with(people, dag_id="outcomes_other")
    met = run_dag(other, DAY)

    assert task_states(met) == {"import_and_launch": "success"}
    summary = summary_of(other, met)
    assert summary["reconciled"] == {"launched": 6, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert (summary["skipped"], summary["uncertain"], summary["requests"]) == (6, 0, 0)
    assert summary["scope"] == {"uncertain": 0, "failed": 0, "stale_sending": 0}
    assert contact_statuses(scenario_id) == {"launched": 6}
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 6, "launched once, by the task"


def test_a_dead_claim_no_run_meets_shows_in_the_standing_until_a_reconciling_run_settles_it(
    dag_with, emulator, scenario_id, capfd
):
    """The dead async try's 6 contacts are in no later run's source. A run of another pipeline reported the
    scenario clean (scope: uncertain 0, failed 0) while they may or may not have been launched, and one
    with reconcile=true read only uncertain contacts: they stayed sending, counted nowhere, for good. Now
    the first run's standing counts them (stale_sending 6) and the reconciling run settles them from their
    recorded task: 6 launched, nobody sent twice, the standing clean."""
    people = contacts(6)
    async_try_gives_up_hours_ago(dag_with, emulator, scenario_id, people)
    other = dag_with(contacts(2, start=100), dag_id="outcomes_other")
    capfd.readouterr()

    first = run_dag(other, DAY)
    assert task_states(first) == {"import_and_launch": "success"}
    stale = {"uncertain": 0, "failed": 0, "stale_sending": 6}
    assert summary_of(other, first)["scope"] == stale
    assert logged_standings(capfd.readouterr().out) == [stale]

    assert_reconciles_the_6_clean(other, emulator, scenario_id)


def assert_reconciles_the_6_clean(dag, emulator, scenario_id: int) -> None:
    """A run of ``dag`` (2 contacts of its own) with reconcile=true finds the scenario's 6 others launched:
    green, the standing clean, each of the 8 launched once."""
    dag_run = dag.test(logical_date=DAY + timedelta(days=1), run_conf={"reconcile": True})
    assert task_states(dag_run) == {"import_and_launch": "success"}
    summary = summary_of(dag, dag_run)
    assert summary["reconciled"] == {"launched": 6, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert summary["scope"] == {"uncertain": 0, "failed": 0, "stale_sending": 0}
    assert contact_statuses(scenario_id) == {"launched": 8}
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8, "launched once each"


def test_reconcile_param_resolves_the_scenario_on_demand(dag_with, emulator, marker_scenario):
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    first = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER)
    assert task_states(run_dag(first, DAY)) == {"import_and_launch": "failed"}

    other = dag_with(contacts(2, start=100), batch_size=6, launch_marker_field=MARKER)
    assert_reconciles_the_6_clean(other, emulator, marker_scenario)


def test_a_reconciliation_run_that_reaches_its_lookup_bound_is_not_clean_and_the_next_goes_on(
    dag_with, emulator, marker_scenario, capfd
):
    """6 contacts left uncertain (Altcraft launched them); a run with reconcile=true and
    reconcile_max_lookups=4 decides 4 and leaves 2 as they are: counted deferred, and the run fails saying
    so instead of turning green. The next reconciling run decides the 2 and succeeds; nobody twice."""
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    first = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER)
    assert task_states(run_dag(first, DAY)) == {"import_and_launch": "failed"}
    other = dag_with(contacts(2, start=100), launch_marker_field=MARKER, reconcile_max_lookups=4)
    capfd.readouterr()

    for day, (decided, left, state) in enumerate([(4, 2, "failed"), (2, 0, "success")], start=1):
        dag_run = other.test(logical_date=DAY + timedelta(days=day), run_conf={"reconcile": True})
        summary = summary_of(other, dag_run)
        assert summary["reconciled"] == {
            "launched": decided,
            "not_processed": 0,
            "uncertain": 0,
            "deferred": left,
        }
        assert (summary["scope"]["uncertain"], task_states(dag_run)) == (left, {"import_and_launch": state})
    assert "2 uncertain contact(s) were not looked up in Altcraft" in capfd.readouterr().out
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 8


EMAIL_PHONE = {
    "matching": "email_phone",
    "key": {"email": "email", "phone": "phone"},
    "fields": {"phones": {"source": "phone", "type": "phone"}},
    "default_region": "RU",
}
BY_CRM_ID = {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "id"}}


@pytest.mark.parametrize(
    ("sent_with", "reconciled_with", "verdicts", "says"),
    [
        (
            EMAIL_MAPPING,
            EMAIL_PHONE,
            {"launched": 6, "not_processed": 0, "uncertain": 0, "deferred": 0},
            None,
        ),
        (
            BY_CRM_ID,
            EMAIL_MAPPING,
            {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0},
            "field matched on",
        ),
    ],
    ids=["email, then email_phone: looked up by email", "custom, then email: the field is unknown, said so"],
)
def test_reconcile_decides_contacts_sent_under_another_matching_mode(
    dag_with, emulator, marker_scenario, sent_with, reconciled_with, verdicts, says
):
    """Run 1 sends 6 contacts with one matching mode and loses the answer (Altcraft processed them).
    Another pipeline of the scenario, matching otherwise, runs with reconcile=true (a pipeline's own
    matching cannot change: tests/pipelines/test_spec_changes.py). Their ledger keys are of the other mode,
    so they were not looked up at all: not counted, not noted, uncertain forever, and the run green. Now
    each is looked up by the mode it was sent with; one whose custom field this pipeline does not know stays
    uncertain, counted, its row saying why and what to do, and the run fails saying so."""
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    first = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER, mapping=sent_with)
    assert task_states(run_dag(first, DAY)) == {"import_and_launch": "failed"}

    other = dag_with(
        contacts(2, start=100),
        dag_id="outcomes_other_matching",
        batch_size=6,
        launch_marker_field=MARKER,
        mapping=reconciled_with,
        allow_undocumented_matching=True,
    )
    dag_run = other.test(logical_date=DAY + timedelta(days=1), run_conf={"reconcile": True})

    summary = summary_of(other, dag_run)
    assert summary["reconciled"] == verdicts
    assert summary["launched"] == 2
    if says is None:
        assert task_states(dag_run) == {"import_and_launch": "success"}
        assert contact_statuses(marker_scenario) == {"launched": 8}
    else:
        assert task_states(dag_run) == {"import_and_launch": "failed"}, "6 contacts are still undecided"
        assert contact_statuses(marker_scenario) == {"launched": 2, "uncertain": 6}
        assert all(says in note for note in uncertain_notes(marker_scenario))
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 8


@pytest.mark.parametrize(
    ("lost", "reads", "says"),
    [
        ("drop_before", None, "Altcraft may still be processing the request (the grace is 600 s)"),
        ("drop_after", 503, "reading the profile failed"),
        ("drop_after", 429, "reading the profile failed"),
    ],
    ids=["within-the-grace", "reads-answer-503", "reads-answer-429"],
)
def test_a_reconciliation_run_that_leaves_contacts_undecided_is_not_clean(
    dag_with, emulator, marker_scenario, lost, reads, says
):
    """Reconcile now while nothing can be decided yet: within the grace of a lost answer, or with every
    profile read refused (503, 429). The run's own contacts all launch; the 6 it was asked to decide stay
    uncertain, each counted as such, the evidence (or the failed read) noted on its row, and the run fails
    saying so instead of turning green."""
    emulator.add_faults({"endpoint": BATCH, "kind": lost, "count": 1})
    first = dag_with(contacts(6), batch_size=6, launch_marker_field=MARKER)
    assert task_states(run_dag(first, DAY)) == {"import_and_launch": "failed"}
    if reads is not None:
        emulator.add_faults({"endpoint": "profiles/get", "kind": "status", "status": reads, "retry_after": 0})

    other = dag_with(contacts(2, start=100), batch_size=6, launch_marker_field=MARKER)
    dag_run = other.test(logical_date=DAY + timedelta(days=1), run_conf={"reconcile": True})

    summary = summary_of(other, dag_run)
    assert summary["reconciled"] == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
    assert (summary["launched"], summary["uncertain"], summary["scope"]["uncertain"]) == (2, 0, 6)
    assert task_states(dag_run) == {"import_and_launch": "failed"}, "6 contacts are still undecided"
    assert contact_statuses(marker_scenario) == {"launched": 2, "uncertain": 6}
    assert all(says in note for note in uncertain_notes(marker_scenario))
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * (
        8 if lost == "drop_after" else 2
    )


# ------------------------------------------------------------------------ 5. dry runs leave no trace


def test_dry_run_emits_no_asset_event_and_writes_no_ledger_row(dag_with, emulator, scenario_id):
    uri = f"altcraft://altcraft_default/scenarios/{scenario_id}"
    before = len(asset_event_extras(uri))
    dag = dag_with([*contacts(12), {"id": 999, "email": "broken"}], dry_run=True)
    dag_run = run_dag(dag, DAY)

    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert len(asset_event_extras(uri)) == before, "nothing downstream is scheduled by a dry run"
    assert outcome_rows(scenario_id) == []
    assert contact_statuses(scenario_id) == {}


# ---------------------------------------------------------------- 6. combined matching: one identity


def test_email_phone_person_seen_three_ways_is_launched_once(dag_with, emulator, scenario_id):
    mapping = {
        "matching": "email_phone",
        "key": {"email": "email", "phone": "phone"},
        "fields": {"phones": {"source": "phone", "type": "phone"}},
        "default_region": "RU",
    }
    arrivals = [
        {"id": 1, "email": "anna@example.org"},
        {"id": 1, "email": "anna@example.org", "phone": "+79001234567"},
        {"id": 1, "phone": "+79001234567"},
    ]
    summaries = []
    for day, record in enumerate(arrivals):
        dag = dag_with([record], mapping=mapping, allow_undocumented_matching=True)
        dag_run = run_dag(dag, DAY + timedelta(days=day))
        assert task_states(dag_run) == {"import_and_launch": "success"}
        summaries.append(xcom_values(dag.dag_id, dag_run.run_id)["import_and_launch", -1])

    assert [(s["launched"], s["skipped"]) for s in summaries] == [(1, 0), (0, 1), (0, 1)]
    assert list(launch_counts(emulator, scenario_id).values()) == [1]
