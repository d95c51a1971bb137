"""The happy path (and the documented refusals) of every API method."""

from __future__ import annotations

import pytest

from .helpers import error, ok

ANNA = "anna@example.org"


def _scenarios(first: int, count: int, **extra):
    return [{"id": first + i, "name": f"S{first + i}", "db_id": 1, **extra} for i in range(count)]


@pytest.mark.parametrize(("total_key", "expected_key"), [(None, "total"), ("total_count", "total_count")])
def test_workflows_list_pages_by_from_id(altcraft_emulator, total_key, expected_key):
    altcraft_emulator.seed(scenarios=_scenarios(20, 3))
    if total_key:
        altcraft_emulator.config(total_key=total_key)
    pages, from_id = [], 1
    while from_id is not None:
        page = ok(altcraft_emulator.post("workflows/list", {"from_id": from_id, "limit": 2}))
        assert page[expected_key] == 5
        pages.append([s["id"] for s in page["data"]])
        from_id = page.get("next_from_id")
    assert pages == [[12, 13], [20, 21], [22]]
    first = ok(altcraft_emulator.post("workflows/list", {}))["data"][0]
    assert first == {
        "id": 12,
        "name": "Welcome chain",
        "list_id": 1,
        "is_active": True,
        "mode": "restart",
        "ui_tags": ["B2C"],
        "groups": [{"ID": 1, "title": "Marketing"}],
        "nodes": first["nodes"],
    }
    assert first["nodes"][0]["type"] == "start"


@pytest.mark.parametrize(("total_key", "expected_key"), [(None, "total_count"), ("total", "total")])
def test_databases_list_get_and_fields(altcraft_emulator, total_key, expected_key):
    altcraft_emulator.seed(databases=[{"id": 2, "name": "Partners"}, {"id": 3, "name": "Leads"}])
    if total_key:
        altcraft_emulator.config(total_key=total_key)
    page = ok(altcraft_emulator.post("databases/list", {"limit": 2}))
    assert page[expected_key] == 3 and page["next_from_id"] == 3
    assert page["data"][0] == {
        "id": 1,
        "name": "Customers",
        "ui_tags": ["demo"],
        "Groups": [{"Id": 1, "Name": "Marketing"}],
    }
    assert "next_from_id" not in ok(altcraft_emulator.post("databases/list", {"from_id": 3}))
    details = ok(altcraft_emulator.post("databases/get", {"id": 1}))["data"]
    assert details == {
        "id": 1,
        "name": "Customers",
        "suppress_id": None,
        "description": "Demo customer database",
    }
    error(altcraft_emulator.post("databases/get", {"id": 99}), 404, "database not found")
    fields = ok(altcraft_emulator.post("databases/fields_get", {"db_id": 1}))["data"]
    assert ok(altcraft_emulator.post("databases/fields_get", {"id": 1}))["data"] == fields
    by_name = {f["name"]: f for f in fields}
    # the layout of the documented resources/fields_get (developer-guide/resources/2195591)
    assert by_name["CRM_ID"] == {
        "category": "custom",
        "title": "CRM ID",
        "name": "CRM_ID",
        "required": False,
        "type": "string",
    }
    assert by_name["LOYALTY"]["type"] == "int"
    assert by_name["email"]["category"] == "system" and by_name["phones"]["type"] == "phones"
    assert {"_fname", "_bdate", "_regdate", "_tz", "_vendor", "_status"} <= by_name.keys()


def test_activate_and_deactivate_flip_whether_launches_are_accepted(altcraft_emulator):
    body = {"workflow_id": 13, "email": ANNA}
    error(altcraft_emulator.post("workflows/import_and_start", body), 400, "workflow is not active")
    assert ok(altcraft_emulator.post("workflows/activate", {"id": 13}))["data"] is None
    ok(altcraft_emulator.post("workflows/import_and_start", body))
    assert ok(altcraft_emulator.post("workflows/deactivate", {"id": 13}))["data"] is None
    error(altcraft_emulator.post("workflows/import_and_start", body), 400, "not active")
    error(altcraft_emulator.post("workflows/activate", {"id": 99}), 404, "workflow not found")
    assert len(altcraft_emulator.journal(13)) == 1


def test_profiles_import_creates_then_updates_and_merges_subscriptions(altcraft_emulator):
    first = {
        "db_id": 1,
        "email": ANNA,
        "data": {
            "_fname": "Anna",
            "LOYALTY": 2,
            "subscriptions": [{"channel": "email", "resource_id": 1, "email": ANNA}],
        },
    }
    profile_id = ok(altcraft_emulator.post("profiles/import", first))["profile_id"]
    assert len(profile_id) == 24 and int(profile_id, 16)
    second = {
        "db_id": 1,
        "email": "ANNA@example.org",
        "data": {
            "LOYALTY": "3",
            "_lname": "K",
            "subscriptions": [
                {"channel": "email", "resource_id": 1, "email": ANNA, "status": "unsubscribed"},
                {"channel": "sms", "resource_id": 1, "phone": "+7 900 000-00-01"},
                {
                    "channel": "push",
                    "resource_id": 2,
                    "provider": "android-firebase",
                    "subscription_id": "tok-1",
                },
            ],
        },
    }
    assert ok(altcraft_emulator.post("profiles/import", second))["profile_id"] == profile_id
    [profile] = altcraft_emulator.profiles(1)
    assert profile["fields"] == {"email": ANNA, "_fname": "Anna", "LOYALTY": 3, "_lname": "K"}
    assert [s["channel"] for s in profile["subscriptions"]] == ["email", "sms", "push"]
    assert profile["subscriptions"][0]["status"] == "unsubscribed"
    assert profile["subscriptions"][1]["phone"] == "+79000000001"
    error(altcraft_emulator.post("profiles/import", {"db_id": 1, "email": ANNA}), 400, "'data' is required")
    error(altcraft_emulator.post("profiles/import", {"db_id": 9, "email": ANNA, "data": {}}), 404, "database")


def test_invalid_subscriptions_fail_or_are_skipped_on_request(altcraft_emulator):
    bad = {"db_id": 1, "email": ANNA, "data": {"subscriptions": [{"channel": "email", "email": ANNA}]}}
    error(altcraft_emulator.post("profiles/import", bad), 400, "resource_id")
    ok(altcraft_emulator.post("profiles/import", {**bad, "skip_invalid_subscriptions": True}))
    assert altcraft_emulator.profiles(1)[0]["subscriptions"] == []


def test_profiles_import_batch_answers_per_item(altcraft_emulator):
    items = [{"email": ANNA, "data": {"_fname": "Anna"}}, {"email": "b@example.org", "data": {"NOPE": 1}}]
    result = ok(altcraft_emulator.post("profiles/import_batch", {"db_id": 1, "data": items}))["result"]
    assert result[0]["error"] == 0 and result[0]["profile_id"]
    assert result[1] == {"error": 400, "error_text": "unknown field 'NOPE' in database 1"}
    assert altcraft_emulator.journal() == []


def test_workflows_start_launches_an_existing_profile_only(altcraft_emulator):
    profile_id = ok(altcraft_emulator.post("profiles/import", {"db_id": 1, "email": ANNA, "data": {}}))[
        "profile_id"
    ]
    answer = ok(
        altcraft_emulator.post("workflows/start", {"id": 12, "email": ANNA, "content": {"promo": "X"}})
    )
    assert answer["profile_id"] == profile_id
    error(
        altcraft_emulator.post("workflows/start", {"id": 12, "email": "nobody@example.org"}),
        404,
        "profile not found",
    )
    error(altcraft_emulator.post("workflows/start", {"id": 77, "email": ANNA}), 404, "workflow not found")
    error(altcraft_emulator.post("workflows/start", {"id": 13, "email": ANNA}), 400, "workflow is not active")
    [entry] = altcraft_emulator.journal()
    assert entry["endpoint"] == "workflows/start" and entry["profile_id"] == profile_id
    assert len(altcraft_emulator.profiles(1)) == 1


def test_import_and_start_journals_one_entry_per_launch(altcraft_emulator):
    response = altcraft_emulator.post(
        "workflows/import_and_start",
        {
            "workflow_id": 12,
            "db_id": 1,
            "matching": "email",
            "email": ANNA,
            "data": {"_fname": "Anna"},
            "skip_triggers": True,
            "content": {"promo": "SPRING"},
        },
    )
    profile_id = ok(response)["profile_id"]
    [entry] = altcraft_emulator.journal(12)
    assert entry == {
        "seq": 1,
        "at": entry["at"],
        "request_id": response.headers["X-Request-Id"],
        "endpoint": "workflows/import_and_start",
        "scenario_id": 12,
        "db_id": 1,
        "profile_id": profile_id,
        "matching": "email",
        "key": ANNA,
        "entered": True,
        "options": {"skip_triggers": True, "content": {"promo": "SPRING"}},
        "token_in": ["header"],
    }
    assert entry["at"].endswith("Z") and "T" in entry["at"]
    mismatch = {"workflow_id": 12, "db_id": 2, "email": ANNA}
    error(altcraft_emulator.post("workflows/import_and_start", mismatch), 400, "db_id 2")
    assert altcraft_emulator.journal(13) == [] and len(altcraft_emulator.journal()) == 1


def test_scenario_mode_decides_whether_a_repeat_launch_enters(altcraft_emulator):
    altcraft_emulator.seed(scenarios=[{"id": 30, "db_id": 1, "mode": "skip"}])
    for scenario_id in (12, 30, 12, 30):
        ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": scenario_id, "email": ANNA}))
    assert [e["entered"] for e in altcraft_emulator.journal(12)] == [True, True]
    assert [e["entered"] for e in altcraft_emulator.journal(30)] == [True, False]
    ok(altcraft_emulator.post("workflows/activate", {"id": 30, "skip_profiles": True}))
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 30, "email": ANNA}))
    assert [e["entered"] for e in altcraft_emulator.journal(30)] == [True, False, True]
    assert [e["seq"] for e in altcraft_emulator.journal()] == [1, 2, 3, 4, 5]


def _twice(channel: str, **address):
    return [{"channel": channel, "resource_id": resource, **address} for resource in (1, 2)]


@pytest.mark.parametrize(
    ("data", "matching", "key"),
    [
        ({"subscriptions": _twice("email", email=ANNA)}, "email_sub", {"email": ANNA}),
        ({"subscriptions": _twice("sms", phone="+79000000001")}, "phone_sub", {"phone": "+79000000001"}),
        ({"phones": ["+7 900 000-00-01", "+79000000001"]}, "phone", {"phone": "+79000000001"}),
        (
            {"subscriptions": _twice("push", provider="android-firebase", subscription_id="tok-1")},
            "push_sub",
            {"provider": "android-firebase", "subscription_id": "tok-1"},
        ),
        (
            {"subscriptions": _twice("telegram_bot", cc_data={"id": "tg-1"})},
            "custom_sub",
            {"field_name": "id", "field_value": "tg-1"},
        ),
    ],
    ids=["email-subscription", "sms-subscription", "phones", "push-subscription", "cc_data"],
)
def test_a_profile_found_twice_under_one_key_is_updated_again(altcraft_emulator, data, matching, key):
    """A profile listing one address twice (two resources, or two spellings of a phone) is found by it and
    updated on every import: the second import was a 500 that left the profile half removed."""
    first = ok(altcraft_emulator.post("profiles/import", {"db_id": 1, "email": ANNA, "data": data}))
    for name in ("First", "Second"):
        update = {"db_id": 1, "email": ANNA, "data": {**data, "_fname": name}}
        assert ok(altcraft_emulator.post("profiles/import", update))["profile_id"] == first["profile_id"]
    [profile] = altcraft_emulator.profiles(1)
    assert profile["fields"]["_fname"] == "Second"
    found = ok(altcraft_emulator.post("profiles/get", {"db_id": 1, "matching": matching, **key}))
    assert found["data"]["id"] == first["profile_id"]
