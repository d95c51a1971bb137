"""Masking of emails, phones, ledger keys and records: exact formats, no leaks, never raising."""

from __future__ import annotations

import json
import math
import time
from datetime import date
from decimal import Decimal

import pytest

from altcraft.mapping import Mapper, Profile, ProfileMapping, mask_key
from altcraft.masking import mask_email, mask_phone, mask_record, mask_text, mask_value
from tests.broken_contacts import BROKEN_CONTACTS, VALID_CONTACTS


class Hostile:
    """An object whose every string conversion fails."""

    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("anna.petrova@example.org", "a***@e***.org"),
        ("Bob@Mail.Example.co.uk", "B***@M***.uk"),
        ("x@y.z", "x***@y***.z"),
        ("anna@пример.рф", "a***@п***.рф"),
        ("anna@localhost", "a***@l***"),
        ("@example.org", "***@e***.org"),
        ("anna@", "a***@***"),
        ("no-at-sign-here", "n***e"),
        ("", "***"),
        (None, "***"),
        (Hostile(), "***"),
    ],
)
def test_mask_email(raw, masked):
    assert mask_email(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+79001234567", "+7******4567"),
        ("+442079460958", "+4*******0958"),
        ("8 (900) 123-45-67", "8 ***********5-67"),
        ("1234567", "1****67"),
        ("123456", "***"),
        ("", "***"),
        (79001234567, "79*****4567"),
        (None, "***"),
    ],
)
def test_mask_phone(raw, masked):
    assert mask_phone(raw) == masked


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("email:anna.petrova@example.org", "email:a***@e***.org"),
        ("email_sub:anna@example.org", "email_sub:a***@e***.org"),
        ("phone:+79001234567", "phone:+7******4567"),
        ("phone_sub:+79001234567", "phone_sub:+7******4567"),
        ("email_phone:anna@example.org|+79001234567", "email_phone:a***@e***.org|+7******4567"),
        ("email_phone_sub:|+79001234567", "email_phone_sub:|+7******4567"),
        ("email_phone:a|b@example.org|", "email_phone:a***@e***.org|"),
        ("push_sub:android-firebase|token-abcdef", "push_sub:android-firebase|t***f"),
        ("custom:C-1234567", "custom:C***7"),
        ("profile_id:65a0c0ffee", "profile_id:6***e"),
        ("unknown:anna@example.org", "u***g"),
        ("anna@example.org", "a***g"),
        ("", "***"),
    ],
)
def test_mask_key_masks_the_value_by_its_kind(key, masked):
    assert mask_key(key) == masked


@pytest.mark.parametrize(
    ("spec", "record"),
    [
        ({"matching": "email", "key": {"email": "e"}}, {"e": "anna.petrova@example.org"}),
        ({"matching": "phone", "key": {"phone": "p"}}, {"p": "+79001234567"}),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
            {"e": "anna.petrova@example.org", "p": "+79001234567"},
        ),
        (
            {"matching": "push_sub", "key": {"provider": "a", "subscription_id": "s"}},
            {"a": "ios-apns", "s": "secret-device-token"},
        ),
        ({"matching": "custom", "field_name": "CRM", "key": {"field_value": "c"}}, {"c": "CRM-987654"}),
        ({"matching": "profile_id", "key": {"profile_id": "p"}}, {"p": "65a0c0ffee0000000000abcd"}),
    ],
)
def test_masked_ledger_keys_of_real_profiles_never_hold_a_key_value(spec, record):
    result = Mapper(ProfileMapping(**spec), source_key_column="id").map({"id": 1, **record})
    assert isinstance(result, Profile)
    masked = mask_key(result.ledger_key)
    assert masked.startswith(f"{spec['matching']}:")
    for value in result.match.values():
        if value != "ios-apns":  # a push provider is not contact data
            assert str(value) not in masked
            assert str(value)[1:-1] not in masked


def test_mask_text_keeps_only_the_ends_of_long_values():
    assert [mask_text(value) for value in ("1234567", "123456", None, 42, Hostile())] == ["1***7"] + [
        "***"
    ] * 4


def test_mask_record_masks_contacts_and_bounds_everything_else():
    record = {
        "id": 17,
        "email": "anna.petrova@example.org",
        "phone": "+7 (900) 123-45-67",
        "phone_int": 79001234567,
        "first_name": "Anna",
        "note": "x" * 100,
        "blob": b"\x00" * 10,
        "nested": {"work_email": "boss@corp.example", "deeper": {"a": {"b": {"c": {"d": 1}}}}},
        "tags": ["a", "anna@example.org", *range(30)],
        "when": date(2020, 1, 1),
        "amount": Decimal("1.5"),
        "ok": True,
        "none": None,
        "ratio": 0.5,
        "ctrl": "a\x00b\ud800",
        "hostile": Hostile(),
    }
    masked = mask_record(record)
    assert masked["id"] == 17
    assert masked["email"] == "a***@e***.org"
    assert masked["phone"] == "+7************5-67"
    assert masked["phone_int"] == "79*****4567"
    assert masked["first_name"] == "Anna"
    assert masked["note"] == "x" * 64 + "…(+36 chars)"
    assert masked["blob"] == "<10 bytes>"
    assert masked["nested"]["work_email"] == "b***@c***.example"
    assert masked["nested"]["deeper"]["a"]["b"] == {"c": "<dict>"}
    assert masked["tags"][:2] == ["a", "a***@e***.org"] and len(masked["tags"]) == 20
    assert (masked["when"], masked["amount"], masked["ok"], masked["none"], masked["ratio"]) == (
        "<date>",
        "<Decimal>",
        True,
        None,
        0.5,
    )
    assert masked["ctrl"] == "a\\u0000b\\ud800"
    assert masked["hostile"] == "<Hostile>"
    json.dumps(masked, ensure_ascii=False).encode()  # loggable: JSON-serialisable, valid UTF-8


@pytest.mark.parametrize("odd", [None, 42, "text", ["a"], Hostile(), object()])
def test_mask_record_never_raises_on_odd_input(odd):
    assert mask_record(odd) == {"<record>": "<unprintable>"}


@pytest.mark.parametrize(
    ("odd", "masked"),
    [
        (Hostile(), "<Hostile>"),
        (object(), "<object>"),
        (10**400, "10" + "*" * 395 + "0000"),  # a number this long is a phone-like identifier
        ({1: 2}, {"1": 2}),
        ({Hostile(): 1}, {"": 1}),
        (["\ud800"], ["\\ud800"]),
    ],
)
def test_mask_value_never_raises_and_says_what_it_hid(odd, masked):
    assert mask_value(odd) == masked


def test_mask_value_passes_nan_through():
    assert math.isnan(mask_value(float("nan")))


def test_no_contact_record_leaks_a_full_email_or_phone():
    records = [record for record, _, _ in BROKEN_CONTACTS] + [record for record, *_ in VALID_CONTACTS]
    for record in records:
        text = json.dumps(mask_record(record), ensure_ascii=False, default=str)
        for column in ("email", "phone"):
            value = record.get(column)
            if isinstance(value, str) and "@" in value and len(value) < 100:
                local = value.strip().split("@")[0]
                assert value.strip() not in text
                assert len(local) < 6 or local not in text
            if isinstance(value, str) and sum(char.isdigit() for char in value) >= 10:
                assert value.strip() not in text


def test_scrub_masks_emails_and_phones_inside_free_text():
    from altcraft.masking import scrub

    text = "profile anna.petrova@example.org not found; +7 900 123-45-67 and 79001234567 clash on 2026-01-01"
    scrubbed = scrub(text)
    assert "anna.petrova@example.org" not in scrubbed and "example.org" not in scrubbed
    assert "123-45-67" not in scrubbed and "79001234567" not in scrubbed
    assert "2026-01-01" in scrubbed and "not found" in scrubbed


@pytest.mark.parametrize("run", ["t", "1", "a@", "+1 "])
def test_scrub_takes_linear_time_on_a_long_run_without_spaces(run):
    """A server text is scrubbed whatever its length: 200,000 characters of one run took minutes when the
    email search was tried from every character of it."""
    from altcraft.masking import scrub

    text = run * (200_000 // len(run))
    started = time.perf_counter()
    scrub(text)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("text", "contact"),
    [
        ("phone 8 (900) 123-45-67 is invalid", "123-45-67"),
        ("phone 8-900-123-45-67 is invalid", "123-45-67"),
        ("phone (900) 123-4567 is invalid", "123-4567"),
        ("phone 900.123.4567", "123.4567"),
        ("phone 8 900 123 45 67", "123 45"),
        ("ph 9001234567x12", "9001234567"),
        ("phone +7.900.123.45.67", "123.45"),
        ("tel:89001234567;ext=12", "9001234567"),
        ("card 1234567890123456 and 12345678901234567890", "5678901234"),
        ("error 400: 89001234567: bad", "9001234567"),
        ('email "anna.petrova"@example.org bad', "anna.petrova"),
        ('invalid input syntax for type integer: ""anna.petrova"@example.org"', "anna.petrova"),
        ('email "anna petrova"@example.org bad', "anna petrova"),
        ('"x" and "anna"@example.org', '"anna"'),
        ("email anna@[192.168.0.1] bad", "192.168.0.1"),
        ("url ?email=anna.petrova%40example.org", "anna.petrova"),
        # a "+" and 7 to 9 digits: E.164 numbers as short as the country code allows
        ("phone +4930123 is not valid", "4930123"),
        ("phone +49 30 123 is not valid", "30 123"),
        ("phone +(683) 4002 unknown", "683) 4002"),
        ("tel:+290222226;ext=1", "222226"),
        ("subscriber x+4930123 blocked", "4930123"),
    ],
)
def test_scrub_masks_phones_with_separators_and_emails_of_every_shape(text, contact):
    from altcraft.masking import scrub

    assert contact not in scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "launched on 2026-12-02, window 2026-12-01 2026-12-31",
        "at 2026-12-02T10:20:30Z and 2026-12-02 10:20:30.123+03:00",
        "HTTP 502 after 3 tries; 1000 of 10000 profiles; ids 101, 102, 103",
        "profile 65a0c0ff0000000000000001, task 550e8400-e29b-41d4-a716-446655440000, scenario 4711",
        "host 192.168.100.200:8080 refused, retry 192.168.100.200",
        'field "name" must be text',
        "offset +0300, UTC+03:00, +123456 points, 1 + 2345678 = 2345679",
        "at 2026-12-02T10:20:30+03:00, order 4930123, id a-4930123",
    ],
)
def test_scrub_keeps_dates_times_statuses_counts_and_ids_readable(text):
    from altcraft.masking import scrub

    assert scrub(text) == text


@pytest.mark.parametrize(
    ("value", "contact"),
    [
        ("тел 89001234567", "9001234567"),
        ("+7 900 123-45-67 ext 12", "123-45"),
        ("x" * 60 + " 89001234567", "890"),
    ],
)
def test_log_samples_of_free_text_mask_the_phones_in_it(value, contact):
    assert contact not in json.dumps(mask_value(value), ensure_ascii=False)


@pytest.mark.parametrize(
    ("text", "values", "masked"),
    [
        # the phone as sent, its digits without "+" (also after a trunk prefix), in one text
        (
            "phone +4930123 is not valid; subscriber 4930123 blocked; dial 004930123",
            ["+4930123"],
            "phone +*****23 is not valid; subscriber 4****23 blocked; dial 004****23",
        ),
        # an email in any letter case, a custom key value inside a word
        ("ANNA.Petrova@Example.ORG refused", ["anna.petrova@example.org"], "A***@E***.ORG refused"),
        ("row KEY-7781x not found", ["key-7781"], "row K***1x not found"),
        # values shorter than 4 characters are left: masking them would mangle the text
        ("code 400 for abc", ["abc", "400"], "code 400 for abc"),
        # no value, no text, a value not in the text: unchanged
        ("phone +4930123", [], "phone +4930123"),
        ("", ["+4930123"], ""),
        ("all fine", ["+4930123", None, 42], "all fine"),
    ],
)
def test_mask_values_masks_every_form_of_the_known_values_in_a_text(text, values, masked):
    from altcraft.masking import mask_values

    assert mask_values(text, values) == masked


def test_mask_values_keeps_every_other_character_where_it_was():
    """A character whose lower case is longer (``İ``) moved every later match of the lower-cased text off
    its place in the text."""
    from altcraft.masking import mask_values

    assert mask_values("İİ ANNA@EXAMPLE.ORG İ 4930123.", ["anna@example.org", "+4930123"]) == (
        "İİ A***@E***.ORG İ 4****23."
    )


def test_mask_values_takes_a_bounded_number_of_values():
    from altcraft.masking import MAX_KNOWN_VALUES, mask_values

    values = [f"value-{n:04d}" for n in range(MAX_KNOWN_VALUES + 1)]
    masked = mask_values(" ".join(values), values)
    assert not any(value in masked for value in values[:MAX_KNOWN_VALUES])
    assert values[MAX_KNOWN_VALUES] in masked


@pytest.mark.parametrize(
    ("run", "values"),
    [
        ("a", ["aaaa", "aaaaa", "a" * 300]),
        ("1", ["+1111111", "11111"]),
        ("4930123", ["+4930123", "0123"]),
        ("ab", ["abab", "baba", "ababa"]),
    ],
)
def test_mask_values_takes_linear_time_on_a_hostile_text(run, values):
    from altcraft.masking import mask_values

    text = run * (200_000 // len(run))
    started = time.perf_counter()
    mask_values(text, values)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("value", "like"),
    [
        ("+4930123", "+4930123"),
        ("8 (900) 123-45-67", "8 (900) 123-45-67"),
        (4930123, "4930123"),
        ("Anna@Example.org", "Anna@Example.org"),
        ("4930", None),  # too few digits for a phone
        ("2026-12-01", None),  # a date
        ("192.168.10.1", None),  # an IPv4 address
        ("A-1234567", None),  # an id
        ("@example.org", None),
        ("anna@", None),
        (True, None),
        (None, None),
        (4.5, None),
    ],
)
def test_contact_like_tells_an_email_or_a_phone_sent_in_a_data_field(value, like):
    from altcraft.masking import contact_like

    assert contact_like(value) == like


def test_mask_values_of_a_request_takes_every_contacts_values_up_to_its_bound():
    from altcraft.masking import MAX_KNOWN_VALUES, MAX_REQUEST_VALUES, mask_values

    values = [f"+4930{n:04d}" for n in range(1000)]
    text = "refused: 49300999 and 49300998, ticket 1234"
    assert mask_values(text, values) == text  # a contact's bound: the first 8 values only
    assert mask_values(text, values, MAX_REQUEST_VALUES) == "refused: 4*****99 and 4*****98, ticket 1234"
    assert mask_values(text, values[: MAX_KNOWN_VALUES + 1], MAX_KNOWN_VALUES + 1) == text
