"""``profiles/get``: read one profile back (used to reconcile uncertain launches)."""

from __future__ import annotations

from .helpers import error, ok

ANNA = "anna@example.org"


def test_profiles_get_returns_fields_createtime_and_id_by_any_matching(altcraft_emulator):
    data = {"_fname": "Anna", "CRM_ID": "A-1", "phones": ["+79000000001"]}
    profile_id = ok(altcraft_emulator.post("profiles/import", {"db_id": 1, "email": ANNA, "data": data}))[
        "profile_id"
    ]
    by_email = ok(altcraft_emulator.post("profiles/get", {"db_id": 1, "email": "Anna@Example.org"}))["data"]
    assert by_email["id"] == profile_id and by_email["db_id"] == 1
    assert (by_email["_fname"], by_email["CRM_ID"], by_email["email"]) == ("Anna", "A-1", ANNA)
    assert by_email["_createtime"].endswith("Z")
    by_phone = {"db_id": 1, "matching": "phone", "phone": "+79000000001"}
    assert ok(altcraft_emulator.post("profiles/get", by_phone))["data"]["id"] == profile_id
    custom = {"db_id": 1, "matching": "custom", "field_name": "CRM_ID", "field_value": "A-1"}
    assert ok(altcraft_emulator.post("profiles/get", custom))["data"]["id"] == profile_id
    assert altcraft_emulator.journal() == [], "reading launches nobody"


def test_profiles_get_refuses_an_unknown_profile_or_database(altcraft_emulator):
    error(
        altcraft_emulator.post("profiles/get", {"db_id": 1, "email": "nobody@example.org"}), 404, "not found"
    )
    error(altcraft_emulator.post("profiles/get", {"db_id": 9, "email": ANNA}), 404, "database")
    error(altcraft_emulator.post("profiles/get", {"email": ANNA}), 400)


def test_profiles_get_answers_subscriptions_with_their_channel_data_nested_as_documented(altcraft_emulator):
    """Developer guide, Objects → Subscription object (developer-guide/objects/Subscription-status_2195807):
    "When querying the profile through the /api/v1.1/profiles/get/ handler, the subscription object contains
    additional metadata: Channel data is stored in separate objects: "email_data" - for Email subscriptions,
    "phone_data" - for SMS/Viber/WhatsApp"; its Get profile data example (developer-guide/profiles/2195482):
    "subscriptions": [{"channel": "email", "email_data": {"domain": "example.org", "domain_group": "other",
    "email": "example_email@example.org", "md5": "…"}, "hash_id": "37885611", "is_delete": false, …}].
    An import sends the address on the subscription itself; the read answers it nested."""
    subscriptions = [
        {"channel": "email", "email": ANNA, "resource_id": 1},
        {"channel": "sms", "phone": "+79000000002", "resource_id": 1},
    ]
    data = {"_fname": "Anna", "subscriptions": subscriptions}
    ok(altcraft_emulator.post("profiles/import", {"db_id": 1, "email": ANNA, "data": data}))
    by_sub = {"db_id": 1, "matching": "phone_sub", "phone": "+79000000002"}
    email_sub, sms_sub = ok(altcraft_emulator.post("profiles/get", by_sub))["data"]["subscriptions"]
    assert (email_sub["channel"], email_sub["email_data"]["email"], email_sub["resource_id"]) == (
        "email",
        ANNA,
        1,
    )
    assert (sms_sub["channel"], sms_sub["phone_data"]["phone"], sms_sub["resource_id"]) == (
        "sms",
        "+79000000002",
        1,
    )
    assert "email" not in email_sub and "phone" not in sms_sub, "the documented layout has no flat address"
    [stored] = altcraft_emulator.profiles(1)
    assert stored["subscriptions"][0]["email"] == ANNA, "only the answer is laid out, not what is stored"
