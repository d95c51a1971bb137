"""Action plans for pipelines whose source keeps a position, and the DAG tag that tells the page so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from altcraft.pipelines import build_dag
from altcraft.ui.actions import Action, plan
from altcraft.ui.marker import Marker, read_marker
from tests.pipelines.test_spec import MINIMAL, spec_with

NOW = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
INTERVAL = (NOW - timedelta(days=1), NOW)
WATERMARK = {"type": "sql_table", "conn_id": "crm", "table": "t", "key_column": "id", "watermark_column": "v"}
FILES = {"type": "file", "path": "/data/in", "key_column": "id", "window_by": "mtime"}
AMO = {"type": "amocrm", "conn_id": "amo"}


@pytest.mark.parametrize(
    ("source", "grace", "expected"),
    [
        (MINIMAL["source"], None, Marker()),
        (MINIMAL["source"], 7200, Marker(keeps_position=False, grace=timedelta(hours=2))),
        (WATERMARK, None, Marker(keeps_position=True)),
        (WATERMARK, 0, Marker(keeps_position=True, grace=timedelta(0))),
        (FILES, None, Marker(keeps_position=True)),
        ({**AMO, "mode": "watermark"}, None, Marker(keeps_position=True)),
        (AMO, None, Marker()),  # window mode: reads its window again
    ],
)
def test_a_pipeline_dag_tells_the_page_its_source_position_and_grace(source, grace, expected):
    scenario = {"id": 12, **({"reconcile_grace_seconds": grace} if grace is not None else {})}
    dag = build_dag(spec_with(source=source, scenario=scenario))
    assert read_marker(dag.tags) == expected
    assert len(dag.tags) == 1 + (expected != Marker()), "one tag at most, only when it says something"


def test_dags_without_the_marker_are_planned_as_reading_their_window_with_the_default_grace():
    assert read_marker(["altcraft", "team:crm", "altcraft-ui:source=position,grace=x"]) == Marker()
    with pytest.raises(ValidationError, match="tag"):  # no spec tag can pass for the marker
        spec_with(tags=["altcraft-ui:source=position"])


@pytest.mark.parametrize("action", [Action.RESEND_UNCERTAIN, Action.RELAUNCH_SELECTED])
def test_a_source_keeping_a_position_gets_no_resend_or_relaunch(action):
    """The new run would read past the position, none of the run's contacts: it would send none of them."""
    for selected in ({"h1"}, set()) if action is Action.RESEND_UNCERTAIN else ({"h1"},):
        with pytest.raises(ValueError, match=r"keeps a position.*none of this run's contacts"):
            plan(
                action,
                dag_id="d",
                run_id="r",
                interval=INTERVAL,
                people=0,
                selected=selected,
                keeps_position=True,
            )


def test_reconcile_and_dry_run_of_a_source_keeping_a_position_say_what_they_read():
    reconcile, dry = (
        plan(action, dag_id="d", run_id="r", interval=INTERVAL, people=0, keeps_position=True)
        for action in (Action.RECONCILE, Action.DRY_RUN)
    )
    assert "checked in Altcraft" in reconcile.message
    assert "none of this run's contacts is sent again" in reconcile.message
    assert "over this window" not in reconcile.message + dry.message
    assert "past its position" in dry.message and "Nothing is sent" in dry.message
    assert reconcile.body["conf"] == {"reconcile": True} and dry.body["conf"] == {"dry_run": True}


@pytest.mark.parametrize(
    ("watermark", "grace", "expected"),
    [
        (None, None, Marker()),
        ("v", None, Marker(keeps_position=True)),
        (None, 90, Marker(grace=timedelta(seconds=90))),
        ("v", timedelta(minutes=2), Marker(keeps_position=True, grace=timedelta(minutes=2))),
    ],
)
def test_a_hand_written_dag_tells_the_page_its_source_position_and_grace(watermark, grace, expected):
    """The operator tags its DAG as the factory tags a pipeline's, or the page offered a watermark DAG's
    runs a relaunch that read only rows past the watermark, none of the run's contacts."""
    from airflow.sdk import DAG

    from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
    from altcraft.sources.sql import SqlTableSource

    read_by = {"watermark_column": watermark} if watermark else {"created_at_column": "created_at"}
    source = SqlTableSource("crm", "t", key_column="id", **read_by)
    with DAG("hand_written", schedule=None, tags=["team:crm"]) as dag:
        ImportAndLaunchScenarioOperator(
            task_id="launch",
            scenario_id=12,
            source=source,
            mapping={"matching": "email", "key": {"email": "email"}},
            reconcile_grace=grace,
        )
    assert read_marker(dag.tags) == expected
    assert len(dag.tags) == 1 + (expected != Marker())
