"""Altcraft's text about one contact quoting that contact's values in forms no pattern can tell from an id (a
short phone, its digits without ``+``, the email in upper case), through the real operator (``dag.test()``),
the emulator behind a rewriting proxy and a PostgreSQL ledger, in each delivery mode: the contact's values are
masked in the ledger's reason, the XCom summary and the log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa

from altcraft.ledger.schema import contacts_table, outcomes_table
from tests.airflow_helpers import install_dag, run_dag, task_states, xcom_values
from tests.conftest import PG_URL

DAG_FILE = Path(__file__).parent / "dag_files" / "welcome_contacts.py"
DAY = pendulum.datetime(2026, 3, 1, tz="UTC")
#: matched by phone: the phone is a value we sent, so known in a text about its contact
PHONE_MAPPING = {
    "matching": "phone",
    "key": {"phone": "phone"},
    "fields": {"_fname": "first_name", "email": {"source": "email", "type": "email"}},
}
SHORT_PHONE = "+4930123"  # E.164 with the country code: 7 digits
CONTACTS = [
    {"id": 1, "phone": SHORT_PHONE, "email": "anna.petrova@example.org", "first_name": "Anna"},
    {"id": 2, "phone": "+79001234567", "email": "boris@example.org", "first_name": "Boris"},
]
#: what Altcraft says of the first contact: its phone as sent and as digits, its email upper-cased
TEXT = f"phone {SHORT_PHONE} is not valid; subscriber {SHORT_PHONE[1:]} blocked (ANNA.PETROVA@EXAMPLE.ORG)"
#: what must appear nowhere (lower-cased)
LEAKS = (SHORT_PHONE[1:], "anna.petrova")


def _refuse_first(results: list[dict[str, Any]]) -> None:
    results[0].update(error=400, error_text=TEXT)


def _batch(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    _refuse_first(answer["result"])
    return status, answer


def _task(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    result = answer["data"].get("result")
    if result:  # finished
        _refuse_first(result["result"])
    return status, answer


def _single(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    if body.get("phone") != SHORT_PHONE:
        return status, answer
    return 400, {"error": 400, "error_text": TEXT}


@pytest.fixture
def pg_ledger(monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_KNOWN_LEDGER", "postgresql://postgres@127.0.0.1:5432/test")
    return "known_ledger"


def _stored(scenario_id: int) -> list[str]:
    """The scenario's outcome reasons and contacts' error texts in the ledger."""
    engine = sa.create_engine(PG_URL)
    o, c = outcomes_table.c, contacts_table.c
    with engine.connect() as conn:
        reasons = conn.scalars(sa.select(o.reason).where(o.scenario_id == scenario_id)).all()
        errors = conn.scalars(sa.select(c.error_text).where(c.scenario_id == scenario_id)).all()
    engine.dispose()
    return [text for text in [*reasons, *errors] if text]


@pytest.mark.parametrize(
    ("delivery", "rewrites"),
    [
        ("batch", {"workflows/import_and_start_batch": _batch}),
        ("async", {"tasks/status": _task}),
        ("single", {"workflows/import_and_start": _single}),
    ],
)
def test_altcraft_text_quoting_a_contacts_short_phone_and_email_is_masked_everywhere(
    emulator, airflow_db, proxy, scenario_id, pg_ledger, delivery, rewrites, caplog, capfd
):
    proxy.rewrite.update(rewrites)
    config = {
        "dag_id": "welcome_known_values",
        "contacts": CONTACTS,
        "key_column": "id",
        "operator": {
            "scenario_id": scenario_id,
            "mapping": PHONE_MAPPING,
            "ledger_conn_id": pg_ledger,
            "delivery": delivery,
            "poll_interval": 0.1,
            "deferrable": False,
            "max_failed_ratio": 1.0,
        },
    }
    dag = install_dag(DAG_FILE, config, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))
    dag_run = run_dag(dag, DAY)
    summary = xcom_values(dag.dag_id, dag_run.run_id).get(("import_and_launch", -1))
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["failed"]) == (1, 1)
    stored = _stored(scenario_id)
    assert any("is not valid" in text and "blocked" in text for text in stored), stored
    seen = {
        "ledger": json.dumps(stored),
        "summary": json.dumps(summary),
        "log": caplog.text + capfd.readouterr().out,
    }
    leaked = {where: leak for where, text in seen.items() for leak in LEAKS if leak in text.lower()}
    assert not leaked, leaked


def test_a_profile_read_failing_with_a_text_quoting_the_contact_masks_its_values(emulator, proxy, caplog):
    """Reconciliation reads an uncertain contact's profile: Altcraft's refusal (retried, each retry logged)
    quotes the contact's phone; its values are masked in the error and in every retry's line."""
    from altcraft.api.errors import AltcraftError
    from altcraft.hooks.altcraft import AltcraftHook

    proxy.rewrite["profiles/get"] = lambda body, answer, status: (500, {"error": 500, "error_text": TEXT})
    hook = AltcraftHook()
    with pytest.raises(AltcraftError) as failed:
        hook.get_profile(1, {"matching": "phone", "phone": SHORT_PHONE}, keys=[f"phone:{SHORT_PHONE}"])
    assert "blocked" in str(failed.value) and "retry" in caplog.text
    leaked = [leak for leak in LEAKS if leak in (str(failed.value) + caplog.text).lower()]
    assert not leaked, leaked
