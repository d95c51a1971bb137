"""CRM preset pipelines run for real: fake CRM over HTTP → dag.test() → Altcraft emulator → ledger."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.airflow_helpers import run_dag, task_states, xcom_values
from tests.fake_crms import FakeAmoCrm, FakeBitrix24, FakeHubSpot, serving
from tests.fake_crms.server import EPOCH, people

from .test_pipeline_runs import launched_emails, load_dags

FAKES = {"amocrm": FakeAmoCrm, "bitrix24": FakeBitrix24, "hubspot": FakeHubSpot}


def connection(crm: str, fake) -> dict:
    host, port = fake.url.rsplit(":", 1)
    if crm == "bitrix24":
        return {"conn_type": "generic", "password": f"{fake.url}/rest/{fake.user}/{fake.secret}/"}
    token = fake.token if crm == "hubspot" else "amo-token"
    return {"conn_type": "generic", "host": host, "port": int(port), "password": token}


def crm_dag(dag_id: str, crm: str, scenario_id: int, *, mapping: dict | None = None, **source):
    """The daily pipeline ``dag_id`` of ``crm`` (connection ``<crm>_crm``), with these source fields."""
    spec = {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2024-03-01",
        "source": {"type": crm, "conn_id": f"{crm}_crm", "requests_per_second": 100, **source},
        "scenario": {"id": scenario_id, "db_id": 1},
        "retries": 0,
        **({"mapping": mapping} if mapping else {}),
    }
    return load_dags([spec])[dag_id]


def run_day(dag, day: int) -> dict:
    """The summary of the pipeline's successful run of ``day`` (days after EPOCH)."""
    run = run_dag(dag, EPOCH + timedelta(days=day))
    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    return xcom_values(dag.dag_id, run.run_id)["import_and_launch", 0]


@pytest.mark.parametrize("crm", list(FAKES))
def test_a_crm_preset_pipeline_launches_each_new_contact_once(
    crm, airflow_db, emulator, scenario_id, monkeypatch
):
    with serving(FAKES[crm](contacts=people(72))) as fake:  # 3 days, one contact an hour
        monkeypatch.setenv(f"AIRFLOW_CONN_{crm.upper()}_CRM", json.dumps(connection(crm, fake)))
        fake.storm = 2  # the account is busy at first: the run waits it out
        dag_id = f"{crm}_welcome_{scenario_id}"
        mapping = {"fields": {"CRM_ID": {"source": "id", "type": "string"}}}  # over the preset
        dag = crm_dag(dag_id, crm, scenario_id, mapping=mapping, backoff_seconds=0.01)
        summaries = [run_day(dag, day) for day in (1, 2)]
        assert [(s["found"], s["launched"]) for s in summaries] == [(24, 24), (24, 24)]
        again = xcom_values(dag.dag_id, run_dag(dag, EPOCH + timedelta(days=2)).run_id)[
            "import_and_launch", 0
        ]
        assert (again["launched"], again["skipped"]) == (0, 24)

    launched = launched_emails(emulator, scenario_id)
    assert sorted(launched) == sorted(f"c{n}@example.org" for n in range(1, 49))
    profiles = {
        p["fields"]["email"]: p["fields"]
        for p in emulator.profiles(db_id=1)
        if p["fields"].get("email") == "c5@example.org"
    }
    assert profiles["c5@example.org"]["_fname"] == "First5" and profiles["c5@example.org"]["CRM_ID"] == "5"


def test_a_contact_shown_after_a_higher_id_is_launched_and_none_launched_twice(
    airflow_db, emulator, scenario_id, monkeypatch
):
    """Bitrix24 watermark: contact 12 is committed after 13 was listed. The watermark moved past it and it
    was never launched; now it stays behind the contacts younger than settle_seconds, the next run reads
    11 to 13 again and launches 12 alone."""
    ago = datetime.now(UTC) - timedelta(minutes=1)
    young = [replace(person, created=ago) for person in people(3, start=11)]
    with serving(FakeBitrix24(contacts=people(10) + young, hidden={12})) as fake:
        monkeypatch.setenv("AIRFLOW_CONN_BITRIX24_CRM", json.dumps(connection("bitrix24", fake)))
        dag_id = f"bitrix24_late_{scenario_id}"
        dag = crm_dag(dag_id, "bitrix24", scenario_id, mode="watermark")
        summaries = [run_day(dag, 1)]
        fake.hidden = set()
        summaries.append(run_day(dag, 2))

    assert [(s["found"], s["launched"], s["skipped"]) for s in summaries] == [(12, 12, 0), (3, 1, 2)]
    launched = launched_emails(emulator, scenario_id)
    assert sorted(launched) == sorted(f"c{n}@example.org" for n in range(1, 14))  # each once
