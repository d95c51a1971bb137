"""The emulator's batch processing against answers recorded before it was made faster: every per-item
result, the stored profiles and the journal, over a corpus of valid and hostile items in every layout and
matching mode (with the hostile source records of `tests.broken_contacts`), strict or not, with
``profile_error`` and ``reorder_results`` faults.

``tests/fixtures/emulator_batch_golden.json`` was recorded by :func:`record` from the emulator before it was
made faster (commit a2fd8c0, "a profile listing one lookup key twice is updated again": main's emulator of
9c8250e crashed on this corpus): ``PYTHONPATH=.:<that tree>/plugins python -c "from
tests.emulator.test_batch_golden import record; record()"``. Record it again only for a deliberate change
of behaviour, and say so: it is the reference a faster emulator must answer exactly as.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from altcraft.emulator.state import DEFAULT_TOKEN, ApiError, Emulator, demo_seed

from ..broken_contacts import BROKEN_CONTACTS, VALID_CONTACTS

INF = float("inf")
GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "emulator_batch_golden.json"

SEED = {
    "databases": [
        {
            "id": 1,
            "fields": [
                {"name": "CRM_ID"},
                {"name": "LOYALTY", "type": "int"},
                {"name": "TAGS", "type": "tags"},
                {"name": "DOC", "type": "json"},
                {"name": "F", "type": "float"},
                {"name": "B", "type": "bool"},
                {"name": "D", "type": "date"},
            ],
        }
    ],
    "scenarios": [{"id": 30, "db_id": 1, "mode": "skip"}],
    "triggers": [{"id": 5, "db_id": 1}],
}

#: The matching key(s) of one profile in each mode, and the profile fields that carry them.
KEYS: dict[str, dict[str, Any]] = {
    "email": {"email": "Anna@Example.org"},
    "email_profile": {"email": "anna@example.org"},
    "email_sub": {"email": "sub@example.org"},
    "phone": {"phone": "+7 900 000-00-01"},
    "phone_sub": {"phone": "+79000000002"},
    "profile_id": {"profile_id": "65a0c0ff0000000000000001"},
    "push_sub": {"provider": "android-firebase", "subscription_id": "tok-1"},
    "custom": {"field_value": "A-1"},
    "custom_sub": {"field_value": "tg-1"},
    "email_phone": {"email": "both@example.org", "phone": "+79000000003"},
    "email_phone_sub": {"phone": "+79000000002"},
}
FIELD_NAME = {"custom": "CRM_ID", "custom_sub": "id"}

GOOD_FIELDS: dict[str, Any] = {
    "_fname": "Anna",
    "LOYALTY": 3,
    "TAGS": "vip, new,,vip",
    "DOC": {"a": [1, None]},
    "F": "2.5",
    "B": "true",
    "D": "2026-02-28",
    "_sex": "female",
    "_postal_code": 390000,
    "_regdate": "2026-01-01T10:00:00+03:00",
    "phones": ["+7 (900) 000-00-09", "+79000000009"],
    "subscriptions": [
        {"channel": "email", "resource_id": 1, "email": "sub@example.org"},
        {"channel": "email", "resource_id": 2, "email_data": {"email": "sub@example.org"}},
        {"channel": "sms", "resource_id": 1, "phone": "+7 900 000-00-02"},
        {"channel": "push", "resource_id": 3, "provider": "android-firebase", "subscription_id": "tok-1"},
        {"channel": "telegram_bot", "resource_id": 4, "cc_data": {"id": "tg-1"}},
    ],
}

HOSTILE_FIELDS: list[dict[str, Any]] = [
    {"LOYALTY": "x"},
    {"LOYALTY": 1.5},
    {"LOYALTY": True},
    {"LOYALTY": 2.0},
    {"LOYALTY": " 7 "},
    {"LOYALTY": None},
    {"F": "inf"},
    {"F": [1]},
    {"B": "maybe"},
    {"B": 0},
    {"D": "2026-13-01"},
    {"D": 20260101},
    {"D": "2026-02-28T25:00"},
    {"_fname": ["Anna"]},
    {"_fname": {"given": "Anna"}},
    {"_fname": 5},
    {"_fname": False},
    {"_sex": [1]},
    {"TAGS": [1]},
    {"TAGS": 5},
    {"phones": "+7 900 000-00-05"},
    {"phones": [5]},
    {"phones": [" ", ""]},
    {"phones": {"a": 1}},
    {"unknown": 1},
    {"subscriptions": 5},
    {"subscriptions": [5]},
    {"subscriptions": [{"channel": "fax", "resource_id": 1}]},
    {"subscriptions": [{"channel": "email", "resource_id": True, "email": "s@example.org"}]},
    {"subscriptions": [{"channel": "email", "email": "s@example.org"}]},
    {"subscriptions": [{"email_data": 5, "resource_id": 1}]},
    {"subscriptions": [{"email_data": {"email": " "}, "resource_id": 1}]},
    {"subscriptions": [{"channel": "sms", "resource_id": 1}]},
    {"subscriptions": [{"phone": "+7 900 000-00-06", "resource_id": 1}]},
    {"subscriptions": [{"channel": "push", "resource_id": 1, "provider": "p"}]},
    {"subscriptions": [{"channel": "telegram_bot", "resource_id": 1, "cc_data": [1]}]},
    {"subscriptions": [{"channel": "viber", "resource_id": 1, "custom_fields": "x"}]},
]

ODD_ITEMS: list[Any] = [
    5,
    "x",
    None,
    [],
    True,
    {},
    {"data": 5},
    {"data": []},
    {"data": None},
    {"data": {}},
    {"email": 5},
    {"email": ""},
    {"email": None, "data": {"email": "nested@example.org"}},
    {"email": ["a@example.org"]},
    {"email": "outer@example.org", "data": {"email": "inner@example.org"}},
    {"email": "item-only@example.org", "custom_data": {"a": 1}, "custom_request": 5, "provider": 1},
    {"phone": 79000000007},
    {"phone": "", "data": {"phones": ["+79000000008"]}},
    {"data": {"phones": "+7 900 000-00-04"}},
    {"data": {"subscriptions": [{"email": "from-sub@example.org", "resource_id": 2}]}},
    {"data": {"subscriptions": [5, {"channel": "sms", "resource_id": 1, "phone": "+79000000010"}]}},
    {"profile_id": 5},
    {"profile_id": "65a0c0ff0000000000000999"},
    {"provider": "android-firebase"},
    {"field_value": None, "data": {"CRM_ID": "A-2"}},
    {"field_value": ["A-1"]},
    {"field_value": {"x": 1}},
    {"field_value": 7},
]


def _key_fields(mode: str, keys: dict[str, Any]) -> dict[str, Any]:
    """The matching key written as the profile fields a server reading only ``data`` looks at."""
    fields: dict[str, Any] = {}
    if "email" in keys:
        fields["email"] = keys["email"]
    if "phone" in keys:
        fields["phones"] = [keys["phone"]]
    if mode in FIELD_NAME and mode == "custom":
        fields[FIELD_NAME[mode]] = keys["field_value"]
    return fields


def _layouts(mode: str, keys: dict[str, Any], fields: dict[str, Any]) -> list[dict[str, Any]]:
    """One profile in the four layouts: flat, nested, data-only, hedged."""
    as_fields = {**fields, **_key_fields(mode, keys)}
    return [{**keys, **fields}, {**keys, "data": fields}, {"data": as_fields}, {**keys, "data": as_fields}]


def _json(record: dict[str, Any]) -> dict[str, Any]:
    """A source record as JSON carries it: dates, decimals, bytes and non-finite numbers as text; huge
    texts cut short."""
    as_json = {
        column: value[:200]
        if isinstance(value, str)
        else str(value)
        if value != value or value in (INF, -INF)
        else value
        for column, value in record.items()
    }
    return json.loads(json.dumps(as_json, default=str))


def _source_items() -> list[Any]:
    """`tests.broken_contacts` records as hedged batch items (the emulator checks no email syntax)."""
    records = [record for record, *_ in BROKEN_CONTACTS] + [record for record, *_ in VALID_CONTACTS]
    items = []
    for record in map(_json, records):
        data = {"_fname": record.get("first_name"), "LOYALTY": record.get("points")}
        data |= {"phones": [record["phone"]]} if "phone" in record else {}
        data |= {"_regdate": record["created_at"]} if "created_at" in record else {}
        items.append({"email": record.get("email"), "data": {**data, "email": record.get("email")}})
    return items


def requests() -> list[tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
    """(endpoint, body, config changes, fault rules) of every request of the corpus, in order."""
    corpus = []
    for mode, keys in KEYS.items():
        items = _layouts(mode, keys, GOOD_FIELDS)
        items += [item for fields in HOSTILE_FIELDS for item in _layouts(mode, keys, fields)[::3]]
        items += ODD_ITEMS
        body = {"db_id": 1, "matching": mode, "field_name": FIELD_NAME.get(mode), "data": items}
        corpus.append(("profiles/import_batch", body, {}, []))
        if mode in ("email", "phone", "custom", "profile_id", "email_profile"):
            launch = {
                **body,
                "workflow_id": 30 if mode == "phone" else 12,
                "data": items[1::2],
                "skip_triggers": True,
            }
            del launch["db_id"]
            corpus.append(("workflows/import_and_start_batch", launch, {}, []))
            strict = {**body, "skip_invalid_subscriptions": True, "data": items[::3]}
            corpus.append(("profiles/import_batch", strict, {"strict": True}, []))
        if mode in ("email", "push_sub", "custom_sub", "email_phone"):
            trigger = {
                "trigger_id": 5,
                "matching": mode,
                "field_name": FIELD_NAME.get(mode),
                "data": items[::2],
            }
            corpus.append(("campaigns/triggers/start_batch", trigger, {}, []))
    sources = {"workflow_id": 12, "matching": "email", "data": _source_items(), "content": {"promo": "X"}}
    corpus.append(("workflows/import_and_start_batch", sources, {}, []))
    faults = [
        {"kind": "profile_error", "every": 3, "code": 402, "text": "limit"},
        {"kind": "reorder_results", "endpoint": "workflows/import_and_start_batch", "count": 1},
    ]
    corpus.append(("workflows/import_and_start_batch", sources, {}, faults))
    hedged = {"workflow_id": 12, "data": [item for item in _source_items() if isinstance(item["email"], str)]}
    corpus.append(("campaigns/triggers/import_and_start_batch", {**hedged, "trigger_id": 5}, {}, []))
    return corpus


def run_corpus() -> dict[str, list[Any]]:
    """Every answer of the corpus (each per-item result as ``[error, error_text, profile_id]``), then the
    profiles and the journal (without times) it left."""
    emulator = Emulator(demo_seed(), token=DEFAULT_TOKEN)
    emulator.apply_seed(SEED)
    answers = []
    for endpoint, body, config, faults in requests():
        emulator.configure({"strict": False, **config})
        emulator.faults.rules.clear()
        emulator.faults.add(faults, random_seed=1)
        try:
            answer = emulator.call(endpoint, json.loads(json.dumps(body)), DEFAULT_TOKEN, "request")
        except ApiError as exc:
            answer = exc.envelope()
        results = [[r["error"], r["error_text"], r.get("profile_id")] for r in answer.pop("result", [])]
        answers.append({**answer, "result": results})
    journal = [{k: v for k, v in entry.items() if k != "at"} for entry in emulator.journal]
    return {"answers": answers, "profiles": emulator.profiles(), "journal": journal}


def record() -> None:
    """Write the golden file from the emulator importable now (see the module docstring): one line per
    answer, profile and journal entry."""
    parts = (
        f'"{name}": [\n' + ",\n".join(json.dumps(item, sort_keys=True) for item in items) + "\n]"
        for name, items in run_corpus().items()
    )
    GOLDEN.write_text("{\n" + ",\n".join(parts) + "\n}\n", "utf-8")


def test_batches_answer_and_store_exactly_as_recorded():
    recorded = json.loads(GOLDEN.read_text("utf-8"))
    now = json.loads(json.dumps(run_corpus()))
    assert len(now["answers"]) == len(recorded["answers"])
    for number, (answer, expected) in enumerate(zip(now["answers"], recorded["answers"], strict=True)):
        assert answer == expected, f"request #{number} {requests()[number][0]}"
    assert now["profiles"] == recorded["profiles"]
    assert now["journal"] == recorded["journal"]
    launched = sum(not error for answer in recorded["answers"] for error, *_ in answer["result"])
    assert launched > 400 and len(recorded["profiles"]) > 40  # the corpus does reach the state
