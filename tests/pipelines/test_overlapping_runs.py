"""Runs that read the same rows launch each contact once, whatever the relaunch policy allows."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
import yaml
from pydantic import ValidationError

from altcraft.pipelines.factory import load_pipelines
from altcraft.pipelines.spec import PipelineSpec, longest_interval
from tests.airflow_helpers import task_states, xcom_values

from .test_pipeline_runs import BROKEN_PER_DAY, DAYS, PER_DAY, launched_emails, load_dags, spec
from .test_pipeline_runs import crm_table as crm_table  # a fixture
from .test_spec import MINIMAL


def test_an_event_run_after_a_failed_one_does_not_relaunch_under_every_run(
    airflow_db, emulator, crm_table, scenario_id
):
    """The first event run launches three batches, then Altcraft refuses the fourth and the task fails: the
    watermark stays, and the next event run reads the same rows from it. Both key the ledger window by the
    watermark they started from, so the second launches only what the first did not."""
    event_spec = spec(
        "every_event",
        crm_table,
        scenario_id,
        schedule=None,
        trigger={"type": "poll", "interval": "1m"},
        max_active_runs=1,
        relaunch_policy="every_run",
        ledger_conn_id="crm_pg",
    )
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "status",
            "status": 400,
            "every": 4,
            "count": 1,
        }
    )
    dag = load_dags([event_spec])["every_event"]
    first = dag.test(logical_date=None)
    assert task_states(first)["import_and_launch"] == "failed"
    first_launched = launched_emails(emulator, scenario_id)
    assert 0 < len(first_launched) < DAYS * PER_DAY

    dag = load_dags([event_spec])["every_event"]
    second = dag.test(logical_date=None)
    assert task_states(second)["import_and_launch"] == "success"
    summary = xcom_values(dag.dag_id, second.run_id)["import_and_launch", 0]
    assert summary["found"] == DAYS * (PER_DAY + BROKEN_PER_DAY)
    launched = Counter(launched_emails(emulator, scenario_id))
    assert len(launched) == DAYS * PER_DAY and set(launched.values()) == {1}


BASE = {**{k: v for k, v in MINIMAL.items() if k != "schedule"}, "id": "overlap"}  # each case sets its own
POLL = {"type": "poll", "interval": "1m"}
CRM_WATERMARK = {"type": "bitrix24", "conn_id": "crm", "mode": "watermark"}
SQL_WATERMARK = {
    "type": "sql_table",
    "conn_id": "crm",
    "table": "t",
    "key_column": "id",
    "watermark_column": "id",
}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"schedule": "1h", "lookback": "15m", "relaunch_policy": "every_run"},
            "relaunch_policy: every_run: with lookback: 15m, consecutive windows overlap, so a row is read "
            "again up to 1h 15m after its launch (lookback + the schedule's longest interval) and would be "
            "launched again. Use relaunch_policy: once, or cooldown:75m or longer",
        ),
        (  # weekdays at 6: the weekend's gap is the longest interval
            {"schedule": "0 6 * * 1-5", "lookback": "1h", "relaunch_policy": "cooldown:1d"},
            "up to 3d 1h after its launch (lookback + the schedule's longest interval) and would be launched "
            "again. Use relaunch_policy: once, or cooldown:73h or longer",
        ),
        (
            {"trigger": POLL, "relaunch_policy": "every_run"},
            "relaunch_policy: every_run with a trigger and max_active_runs: 2: overlapping event runs read "
            "the same rows from different watermarks, and each would launch them. Use relaunch_policy: "
            "once, or max_active_runs: 1",
        ),
        (
            {"trigger": POLL, "max_active_runs": 1, "lookback": "10m", "relaunch_policy": "cooldown:30d"},
            "relaunch_policy: cooldown:30d with a trigger and lookback: 10m: each event run reads back over "
            "rows the run before it read, however long ago, and would launch them again. Use "
            "relaunch_policy: once (or no lookback)",
        ),
        (
            {"trigger": POLL, "max_active_runs": 1, "schedule": "@daily", "relaunch_policy": "every_run"},
            "with a schedule beside the trigger, a scheduled run reads again what event runs read, so a row "
            "is read again up to 1d after its launch (the schedule's longest interval) and would be launched "
            "again. Use relaunch_policy: once, or cooldown:1d or longer",
        ),
        (
            {"schedule": "1h", "source": CRM_WATERMARK, "relaunch_policy": "every_run"},
            "relaunch_policy: every_run: a bitrix24 watermark stays behind contacts created less than "
            "settle_seconds (5m) before a run, so a contact is read again up to 1h 5m after its launch "
            "(settle_seconds + the schedule's longest interval) and would be launched again. Use "
            "relaunch_policy: once, or cooldown:65m or longer, or settle_seconds: 0",
        ),
        (
            {"source": {**CRM_WATERMARK, "settle_seconds": 90}, "relaunch_policy": "cooldown:1d"},
            "relaunch_policy: cooldown:1d: a bitrix24 watermark stays behind contacts created less than "
            "settle_seconds (1m 30s) before a run, so a contact is read again by the runs after its launch "
            "(no schedule) and would be launched again. Use relaunch_policy: once, or settle_seconds: 0",
        ),
        (  # a quiet table keeps the margin over the same rows, run after run: no cooldown covers it
            {"schedule": "1h", "source": {**SQL_WATERMARK, "lookback": 1000}, "relaunch_policy": "every_run"},
            "relaunch_policy: every_run with source.lookback: 1000: each run reads again the rows within "
            "lookback below the watermark, for as long as no higher value comes (however long that is), and "
            "would launch them again. Use relaunch_policy: once, or no source.lookback",
        ),
        (
            {
                "schedule": "1h",
                "source": {**SQL_WATERMARK, "lookback": "15m"},
                "relaunch_policy": "cooldown:1d",
            },
            "relaunch_policy: cooldown:1d with source.lookback: 15m: each run reads again",
        ),
    ],
)
def test_a_policy_that_would_launch_a_row_read_twice_is_a_spec_error(fields: dict, message: str):
    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate({**BASE, **fields})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "1h", "relaunch_policy": "every_run", "partitions": 4},  # disjoint windows
        {"schedule": "1h", "lookback": "15m", "relaunch_policy": "cooldown:75m"},
        {"schedule": "0 6 * * 1-5", "lookback": "1h", "relaunch_policy": "cooldown:73h"},
        {"schedule": "1h", "lookback": "15m"},  # once
        {"trigger": POLL, "lookback": "15m", "schedule": "1h"},  # once
        {"trigger": POLL, "max_active_runs": 1, "relaunch_policy": "every_run"},  # one watermark at a time
        {"trigger": POLL, "max_active_runs": 1, "schedule": "@daily", "relaunch_policy": "cooldown:1d"},
        {"schedule": "1h", "source": CRM_WATERMARK, "relaunch_policy": "cooldown:65m"},
        {"schedule": "1h", "source": {**CRM_WATERMARK, "settle_seconds": 0}, "relaunch_policy": "every_run"},
        {"schedule": "1h", "source": {**CRM_WATERMARK, "mode": "window"}, "relaunch_policy": "every_run"},
        {"schedule": "1h", "source": {**SQL_WATERMARK, "lookback": 1000}},  # once
        {"schedule": "1h", "source": {**SQL_WATERMARK, "lookback": 0}, "relaunch_policy": "every_run"},
        {"schedule": "1h", "source": SQL_WATERMARK, "relaunch_policy": "every_run"},
        {  # read by webhook: the stored ids, no watermark held back
            "source": CRM_WATERMARK,
            "trigger": {"type": "webhook", "auth": "bitrix24", "secret_conn_id": "b24_app_token"},
            "max_active_runs": 1,
            "relaunch_policy": "every_run",
        },
    ],
)
def test_a_policy_that_launches_a_row_read_twice_once_is_accepted(fields: dict):
    PipelineSpec.model_validate({**BASE, **fields})


def test_a_refused_policy_is_the_import_error_of_its_spec_only(tmp_path):
    good = {**BASE, "id": "good", "schedule": "1h", "lookback": "15m"}
    bad = {**good, "id": "bad", "relaunch_policy": "every_run"}
    for spec_data in (good, bad):
        (tmp_path / f"{spec_data['id']}.yaml").write_text(yaml.safe_dump(spec_data))
    loaded = load_pipelines(tmp_path)
    assert list(loaded.dags) == ["good"]
    (error,) = loaded.errors
    assert error.name == "bad.yaml"
    assert "relaunch_policy: every_run: with lookback: 15m" in str(error)
    assert "Use relaunch_policy: once, or cooldown:75m or longer" in str(error)


def test_the_longest_interval_of_a_schedule_counts_a_weekend_and_a_clock_shift():
    start = datetime(2025, 1, 1)
    assert longest_interval("0 6 * * 1-5", start, "UTC") == timedelta(days=3)
    assert longest_interval("0 6 * * *", start, "Europe/Berlin") == timedelta(days=1, hours=1)
    assert longest_interval("@daily", start, "Asia/Kolkata") == timedelta(days=1)
    assert longest_interval("90s", start, "UTC") == timedelta(seconds=90)
