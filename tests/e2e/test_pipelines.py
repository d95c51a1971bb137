"""End to end: real Airflow components backfill two YAML pipelines from PostgreSQL into the emulator.

Scheduler, DAG processor, triggerer and API server run as subprocesses (LocalExecutor) on a fresh
PostgreSQL metadata database; the CRM table and the sync ledger live in another fresh database. The
pipelines are backfilled over 7 days, backfilled again with ``--reprocess-behavior completed``, and one
task is cleared and rerun: every valid contact must be launched exactly once through all of it.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from demo.seed_crm import Contact, sample_contacts, write_contacts

from .conftest import make_dags_folder, start_airflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAYS = 7
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
LOGICAL_DATES = [TODAY - timedelta(days=back) for back in range(DAYS, 0, -1)]
BATCH, ASYNC = "e2e_batch", "e2e_async"
SCENARIOS = {BATCH: 12, ASYNC: 14}
LAUNCH = "import_and_launch"
WAIT = 240  # seconds for a round of runs; they take about 20 s here


def spec(dag_id: str, delivery: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": date(2024, 1, 1),
        "retries": 0,
        "source": {
            "type": "sql_table",
            "conn_id": "e2e_crm",
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
        "scenario": {"id": SCENARIOS[dag_id], "db_id": 1},
        "delivery": delivery,
        "ledger_conn_id": "e2e_crm",
        "max_rejected_ratio": 0.5,
        **extra,
    }


SPECS = {
    BATCH: spec(BATCH, {"mode": "batch", "batch_size": 5}),
    ASYNC: spec(ASYNC, {"mode": "async", "batch_size": 5}, partitions=2),
}


# ------------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def contacts(pg_databases: dict[str, str]) -> list[Contact]:
    """12 contacts a day over the 7 days, every 9th broken, every 17th a returning email."""
    rows = sample_contacts(end=TODAY, days=DAYS, per_day=12, broken_every=9, duplicate_every=17)
    write_contacts(f"postgresql+psycopg2://{pg_databases['crm']}", rows)
    return rows


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory, pg_databases, e2e_emulator, contacts):
    e2e_emulator.seed(
        scenarios=[{"id": SCENARIOS[ASYNC], "name": "Welcome (async)", "db_id": 1, "is_active": True}]
    )
    # Altcraft tasks that take a while: the trigger must wait for them. Not less: a trigger firing within a
    # few seconds of the deferral can lose a race in Airflow 3.3 (apache/airflow#67287, #71580).
    e2e_emulator.config(task_delay_seconds=8)
    home = tmp_path_factory.mktemp("airflow")
    env = {
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT": e2e_emulator.connection_json(),
        "AIRFLOW_CONN_E2E_CRM": f"postgresql://{pg_databases['crm']}",
    }
    metadata = f"postgresql+psycopg2://{pg_databases['metadata']}"
    with start_airflow(home, make_dags_folder(home / "dags", SPECS), metadata, env, list(SPECS)) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def first_round(local_airflow) -> dict[str, list[dict[str, Any]]]:
    """Both pipelines backfilled over the 7 days (at once); their runs once finished."""

    def backfill(dag_id: str) -> str:
        return local_airflow.backfill(dag_id, LOGICAL_DATES[0], LOGICAL_DATES[-1])

    with ThreadPoolExecutor() as pool:
        list(pool.map(backfill, SPECS))
    for dag_id in SPECS:
        local_airflow.api.unpause(dag_id)
    return {dag_id: local_airflow.wait_for_runs(dag_id, LOGICAL_DATES, WAIT) for dag_id in SPECS}


@pytest.fixture(scope="module")
def second_round(first_round, local_airflow, e2e_emulator) -> dict[str, Any]:
    """The batch pipeline backfilled again (reprocessing completed runs) while one async task is cleared."""
    journal_before = {dag_id: e2e_emulator.journal(SCENARIOS[dag_id]) for dag_id in SPECS}
    cleared = first_round[ASYNC][2]["dag_run_id"]
    local_airflow.wait_for_backfills(BATCH)
    local_airflow.backfill(BATCH, LOGICAL_DATES[0], LOGICAL_DATES[-1], reprocess="completed")
    local_airflow.api.clear_task(ASYNC, cleared, LAUNCH)
    return {
        "journal_before": journal_before,
        BATCH: local_airflow.wait_for_runs(BATCH, LOGICAL_DATES, WAIT),
        ASYNC: local_airflow.wait_for_runs(ASYNC, [LOGICAL_DATES[2]], WAIT),
    }


# ----------------------------------------------------------------------------------------- helpers


def valid_emails(contacts: list[Contact]) -> list[str]:
    return sorted({c.email for c in contacts if c.problem is None and c.email})


def on_day(contacts: list[Contact], run: dict[str, Any]) -> list[Contact]:
    start = datetime.fromisoformat(run["data_interval_start"].replace("Z", "+00:00"))
    return [c for c in contacts if start <= c.created_at < start + timedelta(days=1)]


def expected_counts(day: list[Contact]) -> dict[str, int]:
    """What a run over a day's contacts finds and rejects (launched vs skipped depends on earlier runs)."""
    rejected = sum(c.problem is not None for c in day)
    return {"found": len(day), "rejected": rejected, "launched+skipped": len(day) - rejected}


def outcomes(pg_databases: dict[str, str], dag_id: str, try_number: int = 1) -> list[sa.Row]:
    engine = sa.create_engine(f"postgresql+psycopg2://{pg_databases['crm']}")
    try:
        with engine.connect() as conn:
            query = sa.text(
                "SELECT outcome, source_key, reason FROM altcraft_outcomes "
                "WHERE dag_id = :dag_id AND try_number = :try_number"
            )
            return list(conn.execute(query, {"dag_id": dag_id, "try_number": try_number}))
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------- tests


def test_every_backfill_run_succeeds(first_round):
    for dag_id, runs in first_round.items():
        assert [run["state"] for run in runs] == ["success"] * DAYS, dag_id
        assert {run["run_type"] for run in runs} == {"backfill"}


def test_every_valid_contact_is_launched_exactly_once(first_round, e2e_emulator, contacts):
    expected = valid_emails(contacts)
    assert len(expected) > 50
    for dag_id, scenario_id in SCENARIOS.items():
        launched = sorted(entry["key"] for entry in e2e_emulator.journal(scenario_id))
        assert launched == expected, dag_id


def test_broken_rows_are_recorded_in_the_ledger_with_reasons(first_round, pg_databases, contacts):
    broken = {str(c.id) for c in contacts if c.problem is not None}
    returning = sum(c.duplicate_of is not None for c in contacts)
    assert broken and returning
    for dag_id in SPECS:
        rows = outcomes(pg_databases, dag_id)
        rejected = {row.source_key: row.reason for row in rows if row.outcome == "rejected"}
        assert set(rejected) == broken, dag_id
        assert all(reason.startswith("email: ") for reason in rejected.values()), rejected
        counts = Counter(row.outcome for row in rows)
        assert counts == {
            "launched": len(valid_emails(contacts)),
            "skipped": returning,  # the second sign-up of an email already launched
            "rejected": len(broken),
        }


def test_run_summaries_over_the_rest_api_match_the_emulator(
    first_round, local_airflow, e2e_emulator, contacts
):
    for dag_id, runs in first_round.items():
        launched = 0
        for run in runs:
            summary = local_airflow.api.run_summary(dag_id, run["dag_run_id"], LAUNCH)
            counts = expected_counts(on_day(contacts, run))
            assert summary["found"] == counts["found"]
            assert summary["rejected"] == counts["rejected"]
            assert summary["launched"] + summary["skipped"] == counts["launched+skipped"]
            assert summary["failed"] == summary["uncertain"] == 0
            launched += summary["launched"]
        assert launched == len(e2e_emulator.journal(SCENARIOS[dag_id])), dag_id


def test_async_pipeline_waits_for_altcraft_in_the_triggerer(first_round, local_airflow):
    for run in first_round[ASYNC]:
        instances = local_airflow.api.task_instances(ASYNC, run["dag_run_id"], LAUNCH)
        assert sorted(ti["map_index"] for ti in instances) == [0, 1]  # partitions: 2
        for ti in instances:
            log = local_airflow.api.task_log(ASYNC, run["dag_run_id"], LAUNCH, 1, ti["map_index"])
            deferred, fired, resumed = (
                log.index(text)
                for text in ("Pausing task as DEFERRED", "Trigger fired event", "Altcraft delivery summary")
            )
            assert deferred < fired < resumed


def test_reprocessing_the_backfill_launches_nobody_twice(second_round, local_airflow, e2e_emulator, contacts):
    assert e2e_emulator.journal(SCENARIOS[BATCH]) == second_round["journal_before"][BATCH]
    for run in second_round[BATCH]:
        assert run["state"] == "success"
        summary = local_airflow.api.run_summary(BATCH, run["dag_run_id"], LAUNCH)
        counts = expected_counts(on_day(contacts, run))
        assert (summary["launched"], summary["skipped"]) == (0, counts["launched+skipped"])
        assert summary["rejected"] == counts["rejected"]


def test_a_cleared_task_reruns_without_launching_anyone_twice(
    second_round, local_airflow, e2e_emulator, contacts
):
    assert e2e_emulator.journal(SCENARIOS[ASYNC]) == second_round["journal_before"][ASYNC]
    [run] = second_round[ASYNC]
    assert run["state"] == "success"
    instances = local_airflow.api.task_instances(ASYNC, run["dag_run_id"], LAUNCH)
    assert {ti["try_number"] for ti in instances} == {2}
    summary = local_airflow.api.run_summary(ASYNC, run["dag_run_id"], LAUNCH)
    assert (summary["launched"], summary["skipped"]) == (
        0,
        expected_counts(on_day(contacts, run))["launched+skipped"],
    )
