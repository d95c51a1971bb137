"""Altcraft's texts quoting contacts' values in forms no pattern can tell from an id (a short phone, its
digits without ``+``, the email in upper case), through the real operator (``dag.test()``), the emulator
behind a rewriting proxy and a PostgreSQL ledger, in each delivery mode: masked in the ledger's reason, the
XCom summary and the log. A text about one contact masks that contact's values, those of its key and the
emails and phones of its data; a text about a whole request of several contacts (a batch refused, an
Altcraft task unknown) masks every one of its contacts' values."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa

from altcraft.ledger.schema import contacts_table, outcomes_table
from altcraft.operators.import_and_launch import SUMMARY_XCOM_KEY
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
#: matched by email: the short phone is sent in a data field only
BY_EMAIL = {
    "matching": "email",
    "key": {"email": "email"},
    "fields": {"_fname": "first_name", "phones": {"source": "phone", "type": "phone"}},
}
#: three contacts: a text about their request is about several
REQUEST = [*CONTACTS, {"id": 3, "phone": "+79001234568", "email": "vera@example.org", "first_name": "Vera"}]
BLOCKED = f"subscriber {SHORT_PHONE[1:]} is blocked"


def _refuse_first(results: list[dict[str, Any]], text: str = TEXT) -> None:
    results[0].update(error=400, error_text=text)


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


def _run(
    scenario_id: int, ledger: str, mapping: dict[str, Any], delivery: str, contacts: list[dict[str, Any]]
) -> tuple[Any, Any, list[str]]:
    """A run of ``contacts`` in ``delivery`` mode: its DAG run, its XCom summary and the texts it stored."""
    config = {
        "dag_id": f"welcome_known_values_{delivery}",
        "contacts": contacts,
        "key_column": "id",
        "operator": {
            "scenario_id": scenario_id,
            "mapping": mapping,
            "ledger_conn_id": ledger,
            "delivery": delivery,
            "poll_interval": 0.1,
            "deferrable": False,
            "max_failed_ratio": 1.0,
        },
    }
    dag = install_dag(DAG_FILE, config, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))
    dag_run = run_dag(dag, DAY)
    summary = xcom_values(dag.dag_id, dag_run.run_id, key=SUMMARY_XCOM_KEY).get(("import_and_launch", -1))
    return dag_run, summary, _stored(scenario_id)


def _leaked(stored: list[str], summary: Any, log: str) -> dict[str, str]:
    """Where a `LEAKS` value is in clear: the ledger's texts, the summary or the log."""
    seen = {"ledger": json.dumps(stored), "summary": json.dumps(summary), "log": log}
    return {where: leak for where, text in seen.items() for leak in LEAKS if leak in text.lower()}


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
    dag_run, summary, stored = _run(scenario_id, pg_ledger, PHONE_MAPPING, delivery, CONTACTS)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["failed"]) == (1, 1)
    assert any("is not valid" in text and "blocked" in text for text in stored), stored
    leaked = _leaked(stored, summary, caplog.text + capfd.readouterr().out)
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


def _refuse_batch(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    return 400, {"error": 400, "error_text": f"the whole request is refused: {BLOCKED}"}


def _task_unknown(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    return 404, {"error": 404, "error_text": f"task not found: {BLOCKED}"}


def _batch_blocked(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    _refuse_first(answer["result"], BLOCKED)
    return status, answer


def _single_blocked(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    if body.get("email") != CONTACTS[0]["email"]:
        return status, answer
    return 400, {"error": 400, "error_text": BLOCKED}


@pytest.mark.parametrize(
    ("delivery", "rewrites", "said"),
    [
        ("batch", {"workflows/import_and_start_batch": _refuse_batch}, "the whole request is refused"),
        ("async", {"workflows/import_and_start_batch_task": _refuse_batch}, "the whole request is refused"),
        ("async", {"tasks/status": _task_unknown}, "task not found"),
    ],
)
def test_a_text_about_a_whole_request_quoting_one_contacts_short_phone_is_masked_everywhere(
    emulator, airflow_db, proxy, scenario_id, pg_ledger, delivery, rewrites, said, caplog, capfd
):
    proxy.rewrite.update(rewrites)
    dag_run, summary, stored = _run(scenario_id, pg_ledger, PHONE_MAPPING, delivery, REQUEST)
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert summary is not None and summary["launched"] == 0
    assert summary["failed"] + summary["uncertain"] == len(REQUEST)
    # every contact of the request has the request's text, masked
    assert sum(said in text and "is blocked" in text for text in stored) >= len(REQUEST), stored
    leaked = _leaked(stored, summary, caplog.text + capfd.readouterr().out)
    assert not leaked, leaked


@pytest.mark.parametrize(
    ("delivery", "rewrites"),
    [
        ("batch", {"workflows/import_and_start_batch": _batch_blocked}),
        ("single", {"workflows/import_and_start": _single_blocked}),
    ],
)
def test_a_contacts_text_quoting_a_phone_sent_in_a_data_field_only_is_masked_everywhere(
    emulator, airflow_db, proxy, scenario_id, pg_ledger, delivery, rewrites, caplog, capfd
):
    proxy.rewrite.update(rewrites)
    dag_run, summary, stored = _run(scenario_id, pg_ledger, BY_EMAIL, delivery, REQUEST)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["failed"]) == (2, 1)  # the others as before
    assert sum("is blocked" in text for text in stored) == 2, stored  # its outcome and its error text
    leaked = _leaked(stored, summary, caplog.text + capfd.readouterr().out)
    assert not leaked, leaked


def test_a_direct_import_refused_as_a_whole_masks_every_profiles_values(emulator, proxy, caplog):
    """A hook's import called without keys: Altcraft's text about the whole batch (or the one profile),
    retried and logged, quoting a phone sent in a data field masks the request's values."""
    from altcraft.api.errors import AltcraftApiError
    from altcraft.api.models import ImportBatchRequest, ImportProfileRequest
    from altcraft.hooks.altcraft import AltcraftHook

    proxy.rewrite["profiles/import_batch"] = _refuse_batch
    proxy.rewrite["profiles/import"] = _refuse_batch
    hook = AltcraftHook()
    batch = [{"email": "a@example.org", "phones": SHORT_PHONE}, {"email": "b@example.org"}]
    with pytest.raises(AltcraftApiError) as refused_batch:
        hook.import_profiles(ImportBatchRequest(db_id=1, data=batch))
    one = ImportProfileRequest(db_id=1, email="a@example.org", data={"phones": SHORT_PHONE})
    with pytest.raises(AltcraftApiError) as refused_one:
        hook.import_profile(one)
    for refused in (refused_batch, refused_one):
        assert "is blocked" in str(refused.value) and SHORT_PHONE[1:] not in str(refused.value)
    assert SHORT_PHONE[1:] not in caplog.text
