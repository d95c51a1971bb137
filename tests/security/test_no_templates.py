"""Defect 5: spec values are data. Jinja in a spec is sent as written, never rendered (no conn, no var)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pendulum
from hostile_server import TOKEN

SECRET_VAR = "VAR-secret-91d2"
JINJA = "{{ conn.altcraft_default.password }}{{ var.value.harden_secret }}"
#: The operator's parameters its docstring calls templated; a spec never sets one to text of its own.
DOCUMENTED_TEMPLATED = {
    "scenario_id",
    "db_id",
    "content",
    "dry_run_mode",
    "window_start",
    "window_end",
    "relaunch",
    "resend_uncertain",
    "reconcile",
    "only_contacts",
}


def test_jinja_in_a_spec_is_never_rendered(monkeypatch):
    """The operator a pipeline builds, rendered with a real task context (its `conn` and `var` accessors)."""
    from airflow.sdk import DAG
    from airflow.sdk.execution_time.context import ConnectionAccessor, VariableAccessor

    from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
    from altcraft.pipelines.spec import PipelineSpec

    connection = {"conn_type": "altcraft", "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW_VAR_HARDEN_SECRET", SECRET_VAR)
    spec = PipelineSpec.model_validate(
        {
            "id": "jinja",
            "schedule": "1d",
            "timezone": "UTC",
            "start_date": "2026-03-01",
            "source": {"type": "file", "path": "/tmp", "key_column": "id", "window_by": "mtime"},
            "mapping": {
                "matching": "custom",
                "field_name": JINJA,
                "key": {"field_value": "id"},
                "fields": {JINJA: "id", "email": {"source": "email", "type": "email"}},
            },
            "scenario": {"id": 12},
        }
    )
    with DAG("jinja", schedule=None, start_date=pendulum.datetime(2026, 3, 1)):
        operator = ImportAndLaunchScenarioOperator(
            task_id="t", scenario_id=spec.scenario.id, mapping=spec.mapping, contacts=[], key_column="id"
        )
    context = {
        "conn": ConnectionAccessor(),
        "var": {"value": VariableAccessor(deserialize_json=False)},
        "params": {},
        "dag_run": SimpleNamespace(conf={}),
        "data_interval_start": pendulum.datetime(2026, 3, 1),
        "data_interval_end": pendulum.datetime(2026, 3, 2),
    }

    operator.render_template_fields(context)

    assert operator.field_name == JINJA
    rendered = repr({name: getattr(operator, name) for name in operator.template_fields})
    assert TOKEN not in rendered and SECRET_VAR not in rendered
    assert set(operator.template_fields) <= DOCUMENTED_TEMPLATED


def test_notifier_kwargs_from_a_spec_are_not_rendered():
    from altcraft.pipelines.factory import FailureNotification
    from tests.pipelines import notify

    notify.CALLS.clear()
    target = "tests.pipelines.notify:RecordingNotifier"
    callback = FailureNotification(target, {"channel": JINJA}, notifier=True)
    callback({"dag_run": "run-1", "conn": _Secrets(), "var": {"value": _Secrets()}})
    assert notify.CALLS == [("notifier", "run-1", {"channel": JINJA})]


class _Secrets:
    def __getattr__(self, name):
        return type("Conn", (), {"password": TOKEN})() if name == "altcraft_default" else SECRET_VAR
