"""Defect 5: spec values are data. Jinja in a spec is sent as written, never rendered (no conn, no var)."""

from __future__ import annotations

import json
import uuid

import pendulum
from hostile_server import TOKEN, http_answer

from tests.airflow_helpers import run_dag, task_states

SECRET_VAR = "VAR-secret-91d2"
JINJA = "{{ conn.altcraft_default.password }}{{ var.value.harden_secret }}"
SCENARIO = {"id": 12, "name": "welcome", "list_id": 1, "is_active": True}


def altcraft(seen):
    endpoint = seen.path.rsplit("/api/v1.1/", 1)[-1]
    if endpoint == "workflows/list":
        return http_answer(200, {"error": 0, "data": [SCENARIO]})
    rows = json.loads(seen.body).get("data") or []
    return http_answer(200, {"error": 0, "result": [{"error": 0, "profile_id": "p1"} for _ in rows]})


def test_jinja_in_a_spec_is_never_rendered(airflow_db, serve, monkeypatch, tmp_path):
    server = serve(altcraft, token_in_body=False)
    monkeypatch.setenv("AIRFLOW_VAR_HARDEN_SECRET", SECRET_VAR)
    (tmp_path / "crm.csv").write_text("id,email,created_at\n7,anna@example.org,2026-03-01T12:00:00+00:00\n")
    spec = {
        "id": f"jinja_{uuid.uuid4().hex[:6]}",
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2026-03-01",
        "source": {
            "type": "file",
            "path": str(tmp_path),
            "pattern": "*.csv",
            "key_column": "id",
            "timestamp_column": "created_at",
        },
        "mapping": {
            "matching": "custom",
            "field_name": JINJA,
            "key": {"field_value": "id"},
            "fields": {JINJA: "id", "email": {"source": "email", "type": "email"}},
        },
        "scenario": {"id": 12},
        "retries": 0,
    }
    dag = _load(spec)

    run = run_dag(dag, pendulum.datetime(2026, 3, 2, tz="UTC"))

    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    launch = [seen for seen in server.seen if seen.path.endswith("import_and_start_batch")]
    assert len(launch) == 1
    body = json.loads(launch[0].body)
    assert body["field_name"] == JINJA
    assert body["data"][0]["data"][JINJA] in ("7", 7)
    sent = b"".join(seen.body for seen in server.seen).decode()
    assert TOKEN not in sent and SECRET_VAR not in sent


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


def _load(spec: dict):
    from tests.pipelines.test_pipeline_runs import load_dags

    return load_dags([spec])[spec["id"]]
