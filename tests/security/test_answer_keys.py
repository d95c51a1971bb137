"""The keys of an answer are server text too: a key holding the token (in any of its forms) or a contact's
email or phone is cleaned like a value, so it reaches no log, error, ledger row or XCom in clear."""

from __future__ import annotations

import base64
import json
import logging

from hostile_server import TOKEN, http_answer, run_async

from altcraft.hooks.altcraft import AltcraftHook
from altcraft.mapping import ProfileMapping
from altcraft.modes import DeliveryMode

EMAIL, PHONE = "anna.petrova@example.org", "+79001234567"
SECRETS = [TOKEN, TOKEN.lower(), base64.b64encode(TOKEN.encode()).decode(), EMAIL, PHONE, "anna.petrova"]
#: keys quoting the token, an email and a phone, at the top, nested and inside a list
KEYS = {
    "error": 0,
    TOKEN: 1,
    f"echo {TOKEN.lower()}": {EMAIL: {PHONE: [{base64.b64encode(TOKEN.encode()).decode(): "x"}]}},
    "data": [{"id": 12, "name": "W", "is_active": True, f"owner {EMAIL}": "y"}],
}
MAPPING = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})


def _leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_the_keys_of_an_answer_are_cleaned_by_both_hooks(serve):
    serve(lambda seen: http_answer(200, KEYS))
    hook = AltcraftHook()
    answer = json.dumps(hook.call("workflows/list", {"from_id": 12, "limit": 1}), ensure_ascii=False)
    hook.close()
    answered = run_async(lambda ahook: ahook.call("workflows/list", {"from_id": 12, "limit": 1}))
    for kept in (answer, json.dumps(answered, ensure_ascii=False)):
        assert "***" in kept and not _leaked(kept), kept
        assert '"data": [{"id": 12, "name": "W", "is_active": true' in kept


def test_a_task_result_counted_under_a_key_quoting_the_token_or_an_email_is_kept_cleaned(
    serve, sqlite_delivery, caplog
):
    """A finished async task whose counts do not prove the launch: its reason names the counts by their keys,
    and went to the error log and every contact's ledger row with the key's token and email in clear."""
    counts = {"total": 1, f"errors of {EMAIL} for {TOKEN}": 1, f"failed_{PHONE}": 0}

    def answer(seen):
        if seen.path.endswith("tasks/status"):
            return http_answer(200, {"error": 0, "data": {"status": "completed", "result": counts}})
        return http_answer(200, {"error": 0, "data": {"task_id": "task-1"}})

    serve(answer, max_retries=0)
    run = sqlite_delivery(MAPPING, mode=DeliveryMode.ASYNC)
    caplog.set_level(logging.DEBUG)
    run.delivery.process([[{"id": 1, "email": EMAIL}]])
    run.delivery.settle_tasks(run.delivery.tasks, timeout=None)
    run.hook.close()
    reasons = run.kept()
    assert list(run.ledger.contact_states(run.delivery.scope).values()) == ["uncertain"]
    assert "errors of a***@e***.org for ***=1" in reasons[0], reasons
    kept = "\n".join([*filter(None, reasons), caplog.text, json.dumps(run.delivery.summary.as_dict())])
    assert not _leaked(kept), _leaked(kept)


def test_a_documented_key_is_cleaned_too_when_the_token_could_be_part_of_it():
    """Objects holding only documented keys are passed over, unless the token is short enough to hide in
    one of them."""
    from altcraft.api.protocol import MASK, clean_document

    def answer():
        return {"error": 0, "result": [{"error": 0, "profile_id": "p1"}]}

    assert clean_document(answer(), TOKEN) == answer()
    cleaned = clean_document(answer(), "result")
    assert "result" not in cleaned and MASK in cleaned, cleaned
