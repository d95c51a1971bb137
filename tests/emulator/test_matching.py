"""Every matching mode of the developer guide's *Matching* page against seeded profiles, plus ambiguous,
unknown and missing keys."""

from __future__ import annotations

import pytest

from .helpers import error, ok

BY_EMAIL = "aaaaaaaaaaaaaaaaaaaaaa01"
BY_SUBS = "aaaaaaaaaaaaaaaaaaaaaa02"
BY_PHONE = "aaaaaaaaaaaaaaaaaaaaaa03"
BY_CRM = "aaaaaaaaaaaaaaaaaaaaaa04"
PUSH = {"provider": "android-firebase", "subscription_id": "tok-9"}

PROFILES = [
    {"id": BY_EMAIL, "db_id": 1, "fields": {"email": "anna@example.org"}},
    {
        "id": BY_SUBS,
        "db_id": 1,
        "fields": {"_fname": "Subs"},
        "subscriptions": [
            {"channel": "email", "resource_id": 1, "email": "sub@example.org"},
            {"channel": "sms", "resource_id": 1, "phone": "+79000000002"},
            {"channel": "push", "resource_id": 2, **PUSH},
            {"channel": "telegram_bot", "resource_id": 3, "cc_data": {"id": "tg-77"}},
        ],
    },
    {"id": BY_PHONE, "db_id": 1, "fields": {"phones": ["+79000000001"]}},
    {"id": BY_CRM, "db_id": 1, "fields": {"CRM_ID": "A-1001", "LOYALTY": 5}},
]

FOUND = [
    ("email", {"email": "ANNA@example.org"}, BY_EMAIL),
    ("email", {"email": "sub@example.org"}, BY_SUBS),
    ("email_profile", {"email": "anna@example.org"}, BY_EMAIL),
    ("email_sub", {"email": "sub@example.org"}, BY_SUBS),
    ("email_sub", {"email": "sub@example.org", "resource_id": 1}, BY_SUBS),
    ("phone", {"phone": "+79000000001"}, BY_PHONE),
    ("phone", {"phone": "+7 900 000-00-02"}, BY_SUBS),
    ("phone_sub", {"phone": "+79000000002"}, BY_SUBS),
    ("profile_id", {"profile_id": BY_CRM}, BY_CRM),
    ("push_sub", PUSH, BY_SUBS),
    ("custom", {"field_name": "CRM_ID", "field_value": "A-1001"}, BY_CRM),
    ("custom", {"field_name": "LOYALTY", "field_value": "5"}, BY_CRM),
    ("custom_sub", {"field_name": "id", "field_value": "tg-77"}, BY_SUBS),
    ("email_phone", {"email": "anna@example.org"}, BY_EMAIL),
    ("email_phone", {"phone": "+79000000001"}, BY_PHONE),
    ("email_phone_sub", {"email": "sub@example.org", "phone": "+79000000002"}, BY_SUBS),
]

NOT_FOUND = [
    ("email_profile", {"email": "sub@example.org"}),
    ("email_sub", {"email": "anna@example.org"}),
    ("email_sub", {"email": "sub@example.org", "resource_id": 7}),
    ("phone_sub", {"phone": "+79000000001"}),
    ("push_sub", {"provider": "android-firebase", "subscription_id": "other"}),
    ("custom", {"field_name": "CRM_ID", "field_value": "A-9999"}),
    ("custom_sub", {"field_name": "id", "field_value": "tg-78"}),
    ("email_phone_sub", {"email": "anna@example.org"}),
]


@pytest.fixture
def emulator(altcraft_emulator):
    altcraft_emulator.seed(profiles=PROFILES)
    return altcraft_emulator


def _import(emulator, matching, keys, data=None):
    return emulator.post("profiles/import", {"db_id": 1, "matching": matching, **keys, "data": data or {}})


@pytest.mark.parametrize(("matching", "keys", "expected"), FOUND)
def test_mode_finds_and_updates_the_profile(emulator, matching, keys, expected):
    assert ok(_import(emulator, matching, keys, {"_vendor": matching}))["profile_id"] == expected
    profiles = {p["id"]: p for p in emulator.profiles(1)}
    assert len(profiles) == len(PROFILES)
    assert profiles[expected]["fields"]["_vendor"] == matching


@pytest.mark.parametrize(("matching", "keys"), NOT_FOUND)
def test_mode_creates_a_profile_when_nothing_matches(emulator, matching, keys):
    profile_id = ok(_import(emulator, matching, keys))["profile_id"]
    assert profile_id not in {p["id"] for p in PROFILES}
    assert len(emulator.profiles(1)) == len(PROFILES) + 1


def test_profile_id_mode_never_creates(emulator):
    error(
        _import(emulator, "profile_id", {"profile_id": "ffffffffffffffffffffffff"}), 404, "profile not found"
    )
    assert len(emulator.profiles(1)) == len(PROFILES)


def test_a_created_profile_is_found_again_by_its_key(emulator):
    for matching, keys in [
        ("email", {"email": "new@example.org"}),
        ("phone", {"phone": "+79005550000"}),
        ("custom", {"field_name": "CRM_ID", "field_value": "B-1"}),
    ]:
        first = ok(_import(emulator, matching, keys))["profile_id"]
        assert ok(_import(emulator, matching, keys))["profile_id"] == first
    assert len(emulator.profiles(1)) == len(PROFILES) + 3


@pytest.mark.parametrize(
    ("matching", "keys"),
    [
        ("email_phone", {"email": "anna@example.org", "phone": "+79000000001"}),
        ("email", {"email": "twin@example.org"}),
    ],
)
def test_more_than_one_match_is_409(emulator, matching, keys):
    emulator.seed(
        profiles=[
            {"db_id": 1, "fields": {"email": "twin@example.org"}},
            {
                "db_id": 1,
                "subscriptions": [{"channel": "email", "resource_id": 1, "email": "twin@example.org"}],
            },
        ]
    )
    before = emulator.profiles(1)
    error(_import(emulator, matching, keys, {"_fname": "X"}), 409, "more than one profile matches")
    assert emulator.profiles(1) == before


def test_tags_field_matches_profiles_having_all_listed_tags(altcraft_emulator):
    altcraft_emulator.seed(
        databases=[{"id": 5, "name": "Tags", "fields": [{"name": "INTERESTS", "type": "tags"}]}],
        profiles=[
            {"id": BY_EMAIL, "db_id": 5, "fields": {"INTERESTS": ["sport", "music"]}},
            {"id": BY_PHONE, "db_id": 5, "fields": {"INTERESTS": "sport"}},
        ],
    )

    def find(value):
        return altcraft_emulator.post(
            "profiles/import",
            {"db_id": 5, "matching": "custom", "field_name": "INTERESTS", "field_value": value, "data": {}},
        )

    assert ok(find("sport, music"))["profile_id"] == BY_EMAIL
    assert ok(find("music"))["profile_id"] == BY_EMAIL
    error(find("sport"), 409)
    created = ok(find("chess, go"))["profile_id"]
    assert {p["id"]: p["fields"] for p in altcraft_emulator.profiles(5)}[created] == {
        "INTERESTS": ["chess", "go"]
    }


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"matching": "email", "email": "a@example.org", "data": {"SHOE_SIZE": 42}},
            "unknown field 'SHOE_SIZE'",
        ),
        (
            {"matching": "custom", "field_name": "SHOE_SIZE", "field_value": 42, "data": {}},
            "unknown field 'SHOE_SIZE'",
        ),
        (
            {"matching": "email", "email": "a@example.org", "data": {"LOYALTY": "many"}},
            "field 'LOYALTY': expected int",
        ),
        ({"matching": "email", "email": "a@example.org", "data": {"_bdate": "31.12.2001"}}, "'_bdate'"),
        ({"matching": "phone", "email": "a@example.org", "data": {}}, "needs 'phone'"),
        ({"matching": "push_sub", "provider": "android-firebase", "data": {}}, "needs 'subscription_id'"),
        ({"matching": "custom", "field_value": "A-1", "data": {}}, "needs 'field_name'"),
        ({"matching": "email_phone", "data": {}}, "needs email or phone"),
        ({"matching": "fuzzy", "email": "a@example.org", "data": {}}, "unknown matching mode"),
    ],
)
def test_bad_matching_input_is_400(emulator, body, text):
    error(emulator.post("profiles/import", {"db_id": 1, **body}), 400, text)
    assert len(emulator.profiles(1)) == len(PROFILES)


def test_journal_key_holds_the_matching_values(emulator):
    ok(emulator.post("workflows/import_and_start", {"workflow_id": 12, "matching": "push_sub", **PUSH}))
    ok(
        emulator.post(
            "workflows/start",
            {"id": 12, "matching": "custom", "field_name": "CRM_ID", "field_value": "A-1001"},
        )
    )
    first, second = emulator.journal(12)
    assert (first["matching"], first["key"], first["profile_id"]) == ("push_sub", PUSH, BY_SUBS)
    assert (second["matching"], second["key"], second["profile_id"]) == ("custom", "A-1001", BY_CRM)


def test_the_server_keeps_its_own_matching_table():
    """The HTTP emulator never loads the client's table: a wrong key or rule there is a refused request."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, altcraft.emulator.__main__; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'altcraft.emulator.matching'" in loaded and "'altcraft.api.matching'" not in loaded
