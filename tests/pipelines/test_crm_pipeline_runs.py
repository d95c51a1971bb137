"""CRM preset pipelines run for real: fake CRM over HTTP → dag.test() → Altcraft emulator → ledger."""

from __future__ import annotations

import json
from datetime import timedelta

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


@pytest.mark.parametrize("crm", list(FAKES))
def test_a_crm_preset_pipeline_launches_each_new_contact_once(
    crm, airflow_db, emulator, scenario_id, monkeypatch
):
    with serving(FAKES[crm](contacts=people(72))) as fake:  # 3 days, one contact an hour
        monkeypatch.setenv(f"AIRFLOW_CONN_{crm.upper()}_CRM", json.dumps(connection(crm, fake)))
        fake.storm = 2  # the account is busy at first: the run waits it out
        dag_id = f"{crm}_welcome_{scenario_id}"
        dag = load_dags(
            [
                {
                    "id": dag_id,
                    "schedule": "1d",
                    "timezone": "UTC",
                    "start_date": "2024-03-01",
                    "source": {
                        "type": crm,
                        "conn_id": f"{crm}_crm",
                        "requests_per_second": 100,
                        "backoff_seconds": 0.01,
                    },
                    "mapping": {"fields": {"CRM_ID": {"source": "id", "type": "string"}}},  # over the preset
                    "scenario": {"id": scenario_id, "db_id": 1},
                    "retries": 0,
                }
            ]
        )[dag_id]
        summaries = []
        for day in (1, 2):
            run = run_dag(dag, EPOCH + timedelta(days=day))
            assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
            summaries.append(xcom_values(dag.dag_id, run.run_id)["import_and_launch", 0])
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
