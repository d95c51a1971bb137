"""Defect 6: a text from the server is scrubbed of the token and masked for PII before it is kept anywhere."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa
from hostile_server import TOKEN, http_answer

from altcraft.api.errors import AltcraftError
from altcraft.api.models import BatchLaunchRequest
from altcraft.delivery import Delivery, DeliveryMode, LaunchTarget
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Ledger, RelaunchPolicy, RunRef, Scope
from altcraft.mapping import Mapper, ProfileMapping

EMAIL, PHONE = "anna.petrova@example.org", "+79001234567"
MAPPING = {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "name"}}


def test_per_profile_error_text_echoing_the_token_is_scrubbed_everywhere(
    altcraft_emulator, monkeypatch, tmp_path, caplog
):
    token = altcraft_emulator.token
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", altcraft_emulator.connection_json(max_retries=0))
    altcraft_emulator.seed(scenarios=[{"id": 4711, "name": "W", "db_id": 1, "is_active": True}])
    altcraft_emulator.add_faults(
        {"kind": "profile_error", "code": 400, "every": 1, "text": f"token {token} refused {EMAIL} {PHONE}"}
    )
    ledger = Ledger(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    ledger.ensure_schema()
    hook = AltcraftHook()
    hook.get_conn()
    mapping = ProfileMapping.model_validate(MAPPING)
    delivery = Delivery(
        hook=hook,
        ledger=ledger,
        scope=Scope(platform=hook.base_url, scenario_id=4711),
        run=RunRef(dag_id="d", task_id="t", run_id="r", try_number=1, window_key="w"),
        target=LaunchTarget(scenario_id=4711, matching="email"),
        mapper=Mapper(mapping, source_key_column="id"),
        mode=DeliveryMode.BATCH,
        policy=RelaunchPolicy.parse("once"),
    )
    caplog.set_level(logging.DEBUG)

    summary = delivery.process([[{"id": 1, "email": EMAIL, "name": "Anna"}]])

    assert summary.failed == 1
    with ledger.engine.connect() as conn:
        reasons = [row[0] for row in conn.execute(sa.text("SELECT reason FROM altcraft_outcomes"))]
    kept = "\n".join([*reasons, summary.table(), repr(summary.as_dict()), *delivery.sample, caplog.text])
    assert "refused" in kept
    for secret in (token, EMAIL, PHONE, "anna.petrova"):
        assert secret not in kept, secret


@pytest.mark.parametrize("status", (200, 502))
@pytest.mark.parametrize("cut", range(185, 201, 3))
def test_a_token_or_email_across_the_cut_of_a_quoted_body_is_not_kept_in_part(serve, status, cut):
    """A body that is not JSON is quoted in the error by its first 200 characters: cleaned before it is cut,
    so no start of the token or of an email is left where the cut fell."""
    body = "x" * cut + f"{TOKEN} {EMAIL}"
    serve(lambda seen: http_answer(status, body), max_retries=0)
    hook = AltcraftHook()
    with pytest.raises(AltcraftError) as read:
        hook.get_scenario(12)
    hook.close()
    text = str(read.value)
    assert "xxxx" in text
    assert TOKEN[:6] not in text and "anna.pe" not in text, text


def test_a_huge_error_text_without_spaces_is_scrubbed_in_linear_time(serve):
    """Masking a per-profile ``error_text`` of 300,000 characters in one run took the better part of an hour
    (the email search was quadratic); the call ends in seconds."""
    answer = {"error": 0, "result": [{"error": 400, "error_text": "x" * 300_000}]}
    serve(lambda seen: http_answer(200, answer), max_retries=0)
    hook = AltcraftHook()
    started = time.monotonic()
    result = hook.import_and_start_batch(_one_item(), keys=["email:a@example.org"])
    hook.close()
    assert result.result[0].error == 400
    assert time.monotonic() - started < 10


def _one_item() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


@pytest.mark.parametrize(
    "error_text",
    [{"email": EMAIL, "phone": 79001234567, "echo": TOKEN}, [EMAIL, PHONE, TOKEN], 79001234567],
    ids=["object", "list", "number"],
)
def test_a_per_profile_error_text_that_is_not_text_is_masked_as_text(serve, sqlite_delivery, error_text):
    """`error_text` as an object, a list or a number is kept as its text: masked like any server text (only
    strings were masked, so the ledger's reasons held the email and phone in clear)."""
    answer = {"error": 0, "result": [{"error": 400, "error_text": error_text}]}
    serve(lambda seen: http_answer(200, answer), max_retries=0)
    run = sqlite_delivery(MAPPING)
    summary = run.delivery.process([[{"id": 1, "email": EMAIL, "name": "Anna"}]])
    run.hook.close()
    assert summary.failed == 1
    kept = run.kept()
    assert "***" in kept[0] and not kept[0].endswith("…"), "masked, not cut"
    for secret in (TOKEN, EMAIL, "9001234567", "anna.petrova"):
        assert secret not in "\n".join(kept), secret
