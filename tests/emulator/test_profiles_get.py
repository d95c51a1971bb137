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
