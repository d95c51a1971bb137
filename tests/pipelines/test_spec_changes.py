"""A pipeline's spec edited between runs: nobody is launched twice. Two specs into one scenario matching
differently: each runs, and launches a person it reads once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.airflow_helpers import run_dag, task_states, xcom_values

from .test_pipeline_runs import PER_DAY, PG, START, launched_emails, load_dags, spec
from .test_pipeline_runs import crm_table as crm_table  # a fixture


@pytest.fixture
def pg_ledger(monkeypatch) -> str:
    """The pipelines' ledger in PostgreSQL (each test launches a scenario of its own)."""
    monkeypatch.setenv("AIRFLOW_CONN_LIFEAUDIT_LEDGER", PG)
    return "lifeaudit_ledger"


@pytest.mark.parametrize(
    "edited",
    [
        {"matching": "email_profile", "key": {"email": "email"}},  # the same people, by the same address
        {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "id"}},
    ],
    ids=["email_profile", "custom"],
)
def test_a_matching_changed_between_runs_is_refused_before_anything_is_sent(
    airflow_db, emulator, crm_table, scenario_id, pg_ledger, edited
):
    """The ledger knows a contact by its matching key (``email:anna@…``): after an edit to the spec's
    matching it knew nobody, and a rerun of a window launched each of its contacts a second time (24 of
    24 on main). The ledger keeps how each pipeline keys a scenario's contacts: a task of the pipeline keying
    them otherwise fails at once, naming the field, and sends nothing."""
    first = spec("rematched_welcome", crm_table, scenario_id, ledger_conn_id=pg_ledger)
    run = run_dag(load_dags([first])["rematched_welcome"], START + timedelta(days=1))
    assert task_states(run)["import_and_launch"] == "success"

    rematched = {**first, "mapping": {**first["mapping"], **edited}}
    dag = load_dags([rematched])["rematched_welcome"]
    again = dag.test(logical_date=START + timedelta(days=1, hours=1))  # a rerun of the same window

    assert task_states(again)["import_and_launch"] == "failed"
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == len(set(launched)) == PER_DAY
    summary = xcom_values(dag.dag_id, again.run_id, key="altcraft_summary")["import_and_launch", 0]
    assert (summary["found"], summary["launched"]) == (0, 0)


def test_two_pipelines_matching_differently_into_one_scenario_both_run(
    airflow_db, emulator, crm_table, scenario_id, pg_ledger
):
    """Two specs launching one scenario from one table, by email and by email_profile (a CRM keyed by
    email and an app keyed otherwise, feeding one welcome scenario): each keeps its own matching, so both
    run. The caveat: the ledger cannot tell a person keyed ``email:…`` by one from the same person keyed
    ``email_profile:…`` by the other, so each person is launched once per pipeline (48 launches of 24
    people); a rerun of either launches nobody again. Matching both the same way shares exactly-once."""
    by_email = spec("welcome_by_email", crm_table, scenario_id, ledger_conn_id=pg_ledger)
    by_profile = spec("welcome_by_profile", crm_table, scenario_id, ledger_conn_id=pg_ledger)
    by_profile["mapping"] = {**by_profile["mapping"], "matching": "email_profile"}
    dags = load_dags([by_email, by_profile])

    first = run_dag(dags["welcome_by_email"], START + timedelta(days=1))
    second = run_dag(dags["welcome_by_profile"], START + timedelta(days=1))
    assert task_states(first)["import_and_launch"] == "success"
    assert task_states(second)["import_and_launch"] == "success"
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == 2 * PER_DAY and len(set(launched)) == PER_DAY

    dag = dags["welcome_by_profile"]
    again = dag.test(logical_date=START + timedelta(days=1, hours=1))  # a rerun of the same window
    assert task_states(again)["import_and_launch"] == "success"
    summary = xcom_values(dag.dag_id, again.run_id, key="altcraft_summary")["import_and_launch", 0]
    assert summary["launched"] == 0
    assert len(launched_emails(emulator, scenario_id)) == 2 * PER_DAY


@pytest.mark.parametrize("edited", [{"partitions": 3}, {"schedule": "6h"}], ids=["partitions", "schedule"])
def test_a_day_rerun_after_the_spec_cut_time_otherwise_relaunches_nobody_under_every_run(
    airflow_db, emulator, crm_table, scenario_id, pg_ledger, edited
):
    """Under ``every_run`` a rerun or backfill of a window never relaunches, told by the window's key: a
    spec given more partitions or another schedule cuts the same time into windows of other keys, and
    rerunning the first day launched all 24 of its contacts a second time on main. A launch for an
    overlapping window of the same task now counts."""
    daily = spec(
        "recut_welcome",
        crm_table,
        scenario_id,
        ledger_conn_id=pg_ledger,
        relaunch_policy="every_run",
        max_rejected_ratio=0.5,
    )
    run = run_dag(load_dags([daily])["recut_welcome"], START + timedelta(days=1))
    assert task_states(run)["import_and_launch"] == "success"

    dag = load_dags([{**daily, **edited}])["recut_welcome"]
    ends = [START + timedelta(hours=6 * n) for n in range(1, 5)] if "schedule" in edited else [START]
    summaries = []
    for end in ends:  # the first day's runs under the new schedule, or that day again in 3 partitions
        again = run_dag(dag, end if "schedule" in edited else START + timedelta(days=1))
        summaries += xcom_values(dag.dag_id, again.run_id, key="altcraft_summary").values()

    assert sum(s["launched"] for s in summaries) == 0 and sum(s["skipped"] for s in summaries) == PER_DAY
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == len(set(launched)) == PER_DAY
