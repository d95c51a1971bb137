"""``trigger:`` in a pipeline spec: validation, the DAG's schedule and event asset, the event-run window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk import Asset, AssetOrTimeSchedule
from pydantic import ValidationError

from altcraft.pipelines.events import WATERMARK_KEY, advanced_watermark
from altcraft.pipelines.factory import SpecSource, build_dag, event_window, pipeline_event_asset
from altcraft.pipelines.spec import EVENT_MAX_ACTIVE_RUNS, PipelineSpec, SpecError, read_spec
from altcraft.sources.base import MemoryStateStore, Window
from altcraft.triggers.new_rows import NewRowsTrigger

TABLE = {"type": "sql_table", "conn_id": "crm", "table": "contacts", "key_column": "id"}
POLL = {"type": "poll", "interval": "2s"}
HOOK = {"type": "webhook", "secret_conn_id": "hook_secret"}


def spec(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "rt",
        "timezone": "UTC",
        "start_date": "2025-01-01",
        "source": {**TABLE, "created_at_column": "created_at"},
        "mapping": {"matching": "email", "key": {"email": "email"}},
        "scenario": {"id": 12},
    }
    return {**base, **fields}


def errors(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate(data)
    return str(caught.value)


def test_a_trigger_may_replace_the_schedule_but_one_of_them_is_needed():
    assert PipelineSpec.model_validate(spec(trigger=POLL)).schedule is None
    assert PipelineSpec.model_validate(spec(trigger=POLL, schedule="1h")).schedule == "1h"
    assert "give a schedule, a trigger, or both" in errors(spec())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": {**TABLE, "watermark_column": "id"}}, "poll needs a source that reads by creation time"),
        ({"source": {"type": "python", "callable": "m:f", "key_column": "id"}}, "poll needs a source"),
        ({"partitions": 2}, "partitions must be 1"),
        ({"trigger": HOOK}, "a webhook trigger needs `source: {type: webhook"),
        ({"trigger": {**POLL, "interval": "soon"}}, "expected a duration"),
        ({"trigger": {"type": "queue"}}, "trigger"),
        (
            {"trigger": {**HOOK, "auth": "plain"}, "source": {"type": "webhook", "key_column": "e"}},
            "unknown webhook auth",
        ),
        (
            {"trigger": None, "schedule": "1h", "source": {"type": "webhook", "key_column": "e"}},
            "needs `trigger",
        ),
    ],
)
def test_trigger_mistakes_name_the_field(fields: dict[str, Any], message: str):
    assert message in errors(spec(**{"trigger": POLL, **fields}))


HUBSPOT_HOOK = {**HOOK, "auth": "hubspot"}
HUBSPOT = {"type": "hubspot", "conn_id": "crm_hubspot"}


def test_a_public_url_is_the_scheme_and_host_alone():
    pinned = {**HUBSPOT_HOOK, "public_url": "https://hooks.example.com:8443/"}
    assert PipelineSpec.model_validate(spec(trigger=pinned, source=HUBSPOT)).trigger.public_url == (
        "https://hooks.example.com:8443"
    )
    unpinned = PipelineSpec.model_validate(spec(trigger=HUBSPOT_HOOK, source=HUBSPOT))
    assert unpinned.trigger.public_url is None


def test_the_webhook_app_reads_a_pinned_url_from_the_pipelines_asset_and_an_unpinned_asset_is_unchanged():
    pinned = PipelineSpec.model_validate(
        spec(trigger={**HUBSPOT_HOOK, "public_url": "https://hooks.example.com"}, source=HUBSPOT)
    )
    assert pipeline_event_asset(pinned).extra["webhook"]["public_url"] == "https://hooks.example.com"
    unpinned = PipelineSpec.model_validate(spec(trigger=HUBSPOT_HOOK, source=HUBSPOT))
    assert "public_url" not in pipeline_event_asset(unpinned).extra["webhook"]


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ({**HUBSPOT_HOOK, "public_url": "ftp://hooks.example.com"}, "not an http:// or https:// URL"),
        ({**HUBSPOT_HOOK, "public_url": "hooks.example.com"}, "not an http:// or https:// URL"),
        ({**HUBSPOT_HOOK, "public_url": "https://"}, "the URL names no host"),
        ({**HUBSPOT_HOOK, "public_url": "https://ann:pa55@hooks.example.com"}, "a user name or password"),
        ({**HUBSPOT_HOOK, "public_url": "https://hooks.example.com/altcraft-webhooks/rt"}, "a path"),
        ({**HUBSPOT_HOOK, "public_url": "https://hooks.example.com?x=1"}, "a query or fragment"),
        ({**HUBSPOT_HOOK, "public_url": "https://hooks.example.com#top"}, "a query or fragment"),
        ({**HUBSPOT_HOOK, "public_url": "https://hooks.example.com:99999"}, "not a URL"),
        ({**HUBSPOT_HOOK, "public_url": "https://hooks example.com"}, "not a URL"),
        (
            {**HOOK, "public_url": "https://hooks.example.com"},
            "the proof of auth hmac does not cover the URL",
        ),
    ],
)
def test_a_public_url_mistake_names_the_field_never_the_value(
    tmp_path, trigger: dict[str, Any], message: str
):
    path = tmp_path / "rt.yaml"
    source = HUBSPOT if trigger.get("auth") == "hubspot" else {"type": "webhook", "key_column": "email"}
    path.write_text(yaml.safe_dump(spec(trigger=trigger, source=source)))
    error = read_spec(path)
    assert isinstance(error, SpecError) and f"trigger.public_url: {message}" in error.message, error
    assert "pa55" not in error.message


def test_a_webhook_source_reads_the_pipeline_endpoint_in_the_ledger_database():
    parsed = PipelineSpec.model_validate(
        spec(trigger=HOOK, source={"type": "webhook", "key_column": "email"}, ledger_conn_id="ledger")
    )
    assert (parsed.source.endpoint, parsed.source.ledger_conn_id) == ("rt", "ledger")
    assert "leave it out" in errors(
        spec(trigger=HOOK, source={"type": "webhook", "key_column": "email", "ledger_conn_id": "other"})
    )


def test_a_webhook_source_reading_another_endpoint_is_refused():
    """With ``endpoint: other`` the pipeline's own URL (its event asset names it a webhook) answered 200 and
    stored deliveries under its id, which its source, reading ``other``, never read: acknowledged, never
    launched."""
    hook = {"type": "webhook", "key_column": "email"}
    assert (
        PipelineSpec.model_validate(spec(trigger=HOOK, source={**hook, "endpoint": "rt"})).source.endpoint
        == "rt"
    )
    message = errors(spec(trigger=HOOK, source={**hook, "endpoint": "other"}))
    assert "source.endpoint: leave it out" in message and "/altcraft-webhooks/rt" in message


def test_event_runs_overlap_unless_the_spec_limits_them():
    def runs(**fields: Any) -> int:
        return build_dag(PipelineSpec.model_validate(spec(**fields))).max_active_runs

    assert runs(trigger=POLL) == runs(trigger=POLL, schedule="1h") == EVENT_MAX_ACTIVE_RUNS > 1
    assert runs(trigger=POLL, max_active_runs=1) == 1
    assert runs(schedule="1h") == 1
    # when slots are short, an active run's launch goes before a newer run's plan
    events, scheduled = (
        build_dag(PipelineSpec.model_validate(spec(**f))) for f in ({"trigger": POLL}, {"schedule": "1h"})
    )
    assert {task.weight_rule for task in events.tasks} == {"upstream"}
    assert {task.weight_rule for task in scheduled.tasks} == {"downstream"}


def test_the_dag_is_scheduled_on_its_watched_event_asset_or_the_schedule():
    only_events = build_dag(PipelineSpec.model_validate(spec(trigger=POLL)))
    both = build_dag(PipelineSpec.model_validate(spec(trigger=POLL, schedule="1h", lookback="10m")))
    hook = build_dag(
        PipelineSpec.model_validate(
            spec(trigger=HOOK, source={"type": "webhook", "key_column": "email"}, ledger_conn_id="ledger")
        )
    )
    for dag in (only_events, both, hook):
        dag.validate()
    assert isinstance(both.timetable, AssetOrTimeSchedule)
    asset = only_events.timetable.asset_condition
    assert isinstance(asset, Asset) and asset.uri == "altcraft-pipeline://rt/events"
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, NewRowsTrigger) and watcher.trigger.poll_interval == 2.0
    launch = only_events.get_task("import_and_launch")
    assert [a.uri for a in launch.partial_kwargs["inlets"]] == [asset.uri]  # state read through an inlet:
    assert asset.uri not in [a.uri for a in launch.partial_kwargs["outlets"]]  # an outlet would self-trigger
    hook_asset = hook.timetable.asset_condition
    assert hook_asset.extra == {
        "webhook": {
            "auth": "hmac",
            "secret_conn_id": "hook_secret",
            "ledger_conn_id": "ledger",
            "max_bytes": 1048576,
            "max_records": 10_000,
            "auth_failures_per_minute": 30,
        }
    }
    for task_asset in hook.get_task("plan").inlets:  # Airflow keeps one definition per asset: the last one
        assert task_asset.extra == hook_asset.extra
        assert [(w.name, w.trigger.serialize()) for w in task_asset.watchers] == [
            (w.name, w.trigger.serialize()) for w in hook_asset.watchers
        ]


def test_a_run_without_a_data_interval_reads_from_the_watermark_to_now():
    dag = build_dag(PipelineSpec.model_validate(spec(trigger=POLL, schedule="1d")))
    plan = dag.get_task("plan")
    (events,) = plan.inlets
    store = MemoryStateStore()
    context: dict[str, Any] = {
        "data_interval_start": None,
        "data_interval_end": None,
        "params": {},
        "dag": dag,
        "dag_run": SimpleNamespace(run_after=datetime.now(UTC)),
        "asset_state_store": {events: store},
    }
    start, end = event_window(context, events)
    assert start == datetime(2025, 1, 1, tzinfo=UTC) and end > datetime.now(UTC) - timedelta(seconds=5)
    store.set(WATERMARK_KEY, "2026-01-01T00:00:00+00:00")
    (window,) = plan.execute(context)
    assert window["window_start"] == "2026-01-01T00:00:00+00:00"
    scheduled = {
        **context,
        "data_interval_start": datetime(2024, 5, 1, tzinfo=UTC),
        "data_interval_end": datetime(2024, 5, 2, tzinfo=UTC),
    }
    assert plan.execute(scheduled) == [
        {"window_start": "2024-05-01T00:00:00+00:00", "window_end": "2024-05-02T00:00:00+00:00"}
    ]


def test_the_watermark_moves_only_over_a_window_that_covers_it():
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    mark = t.isoformat()
    assert advanced_watermark(None, t, t + timedelta(minutes=1)) == (t + timedelta(minutes=1)).isoformat()
    assert (
        advanced_watermark(mark, t - timedelta(hours=2), t + timedelta(seconds=5))
        == (t + timedelta(seconds=5)).isoformat()
    )
    assert advanced_watermark(mark, t - timedelta(days=1), t) is None  # a past scheduled window
    assert advanced_watermark(mark, t + timedelta(minutes=1), t + timedelta(minutes=2)) is None  # a gap


def test_a_triggered_source_commits_the_window_watermark_after_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CRM", f"sqlite:///{tmp_path / 'crm.db'}")
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, created_at TEXT)")
        conn.exec_driver_sql("INSERT INTO contacts VALUES (1, 'a@example.com', '2026-01-01 12:00:01')")
    parsed = PipelineSpec.model_validate(spec(trigger=POLL))
    source = SpecSource(parsed.source, track_windows=True)
    assert source.state is None  # the operator gives it the event asset's store
    store = MemoryStateStore()
    source.state = store
    store.set(WATERMARK_KEY, "2026-01-01T12:00:00+00:00")
    window = Window(datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 12, 5, tzinfo=UTC))
    assert [r["id"] for batch in source.batches(window, 10) for r in batch] == [1]
    source.commit()
    assert store.get(WATERMARK_KEY) == "2026-01-01T12:05:00+00:00"


def test_a_window_ending_after_its_read_moves_the_watermark_only_to_when_it_was_read(tmp_path, monkeypatch):
    """A run given a window ending in the future (``window_end`` next month, to catch up) read the rows there
    were, then moved the watermark to that end: every event run read ``[now, now)`` and the trigger counted
    nothing past it, so each contact created meanwhile was left unlaunched, without a word, until then. The
    watermark moves to the window's end or to when the read began, whichever is first."""
    monkeypatch.setenv("AIRFLOW_CONN_CRM", f"sqlite:///{tmp_path / 'crm.db'}")
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, created_at TEXT)")
    source = SpecSource(PipelineSpec.model_validate(spec(trigger=POLL)).source, track_windows=True)
    source.state = store = MemoryStateStore()
    before = datetime.now(UTC)
    store.set(WATERMARK_KEY, (before - timedelta(days=1)).isoformat())
    assert list(source.batches(Window(before - timedelta(days=7), before + timedelta(days=30)), 10)) == []
    source.commit()
    assert before <= datetime.fromisoformat(store.get(WATERMARK_KEY)) <= datetime.now(UTC)
