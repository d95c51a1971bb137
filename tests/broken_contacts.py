"""Broken and tricky-but-valid source records for an email-matching mapping; reused by several test files.

All records assume `MAPPING` (a `ProfileMapping` spec as it would be written in YAML) over the
columns ``id`` (source key), ``email``, ``phone``, ``first_name``, ``created_at`` and ``points``:

* `BROKEN_CONTACTS`: (record, expected `Rejection.field`, substring of `Rejection.reason`);
* `VALID_CONTACTS`: (record, expected match, expected ledger key, expected subset of `Profile.data`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

SOURCE_KEY_COLUMN = "id"

MAPPING: dict[str, Any] = {
    "matching": "email",
    "resource_id": 1,
    "key": {"email": "email"},
    "fields": {
        "email": {"source": "email", "type": "email"},
        "phones": {"source": "phone", "type": "phone"},
        "_fname": "first_name",
        "_regdate": {"source": "created_at", "type": "datetime"},
        "LOYALTY": {"source": "points", "type": "int"},
    },
    "subscriptions": [
        {"channel": "email", "resource_id": 1, "source": "email"},
        {"channel": "sms", "resource_id": 1, "source": "phone"},
    ],
    "timezone": "Europe/Moscow",
    "default_region": "RU",
    "required": ["_fname"],
}

GOOD: dict[str, Any] = {
    "id": 1,
    "email": "anna.petrova@example.org",
    "phone": "+79001234567",
    "first_name": "Anna",
    "created_at": "2023-05-01T10:00:00",
    "points": 10,
}


def record(**changes: Any) -> dict[str, Any]:
    """`GOOD` with some columns changed; a column given as `...` is removed."""
    result = {**GOOD, **changes}
    return {column: value for column, value in result.items() if value is not ...}


BROKEN_CONTACTS: list[tuple[dict[str, Any], str, str]] = [
    # the matching key: email syntax
    (record(email="anna.example.org"), "email", "@-sign"),
    (record(email="anna@@example.org"), "email", "invalid characters"),
    (record(email="anna petrova@example.org"), "email", "invalid characters"),
    (record(email="anna@example.org."), "email", "period"),
    (record(email="anna@example..org"), "email", "two periods"),
    (record(email="anna@xn--zz.com"), "email", "IDNA"),
    (record(email="a" * 300 + "@example.org"), "email", "too long"),
    (record(email="anna@localhost"), "email", "period"),
    (record(email="anna@example.invalid"), "email", "special-use"),
    (record(email="anna@[192.0.2.1]"), "email", "bracketed"),
    (record(email='"anna petrova"@example.org'), "email", "Quoting"),
    (record(email="anna@-example.org"), "email", "hyphen"),
    # the matching key: missing, empty, wrong type, hostile characters
    (record(email=...), "email", "missing"),
    (record(email=None), "email", "missing"),
    (record(email=""), "email", "missing"),
    (record(email="   "), "email", "missing"),
    (record(email=["anna@example.org"]), "email", "expected text, got list"),
    (record(email={"address": "anna@example.org"}), "email", "expected text, got dict"),
    (record(email=12345), "email", "expected text, got int"),
    (record(email="anna\x00@example.org"), "email", "U+0000"),
    (record(email="anna\u202e@example.org"), "email", "U+202E"),
    (record(email="anna\u200b@example.org"), "email", "U+200B"),
    (record(email="anna\ud800@example.org"), "email", "lone surrogate"),
    (record(email="x" * 1_048_576), "email", "above the limit"),
    # phones
    (record(phone="+7 900 CALL-ME"), "phones", "letters"),
    (record(phone="12345"), "phones", "too short"),
    (record(phone="+7 900 123-45-67-89"), "phones", "length"),
    (record(phone="+7 000 123 45 67"), "phones", "not a valid number"),
    (record(phone="202 555 0100"), "phones", "not a valid number"),  # a US number read as Russian
    (record(phone="+999 123 456 789"), "phones", "country code"),
    (record(phone=79001234567.0), "phones", "got float"),
    (record(phone=True), "phones", "got bool"),
    (record(phone="+7\t900 123 45 67"), "phones", "U+0009"),
    # wrong types and values in typed fields
    (record(points="abc"), "LOYALTY", "not an integer"),
    (record(points="1_000"), "LOYALTY", "not an integer"),
    (record(points=3.5), "LOYALTY", "fractional"),
    (record(points=float("nan")), "LOYALTY", "finite"),
    (record(points=float("inf")), "LOYALTY", "finite"),
    (record(points=True), "LOYALTY", "got bool"),
    (record(points=2**70), "LOYALTY", "64-bit"),
    (record(points=[1]), "LOYALTY", "got list"),
    (record(first_name={"given": "Anna"}), "_fname", "got dict"),
    (record(first_name=b"Anna"), "_fname", "got bytes"),
    (record(first_name=True), "_fname", "got bool"),
    # hostile text
    (record(first_name="Anna\x00"), "_fname", "U+0000"),
    (record(first_name="Anna\x07"), "_fname", "U+0007"),
    (record(first_name="An\x85na"), "_fname", "U+0085"),
    (record(first_name="x" * 1_048_576), "_fname", "above the limit of 65536"),
    (record(first_name="\udc80Anna"), "_fname", "lone surrogate"),
    (record(first_name="\U0001f600" * 65_536), "<profile>", "above the limit"),
    # required field
    (record(first_name=None), "_fname", "required"),
    (record(first_name=" \t "), "_fname", "required"),
    # dates
    (record(created_at="2023-02-30"), "_regdate", "ISO 8601"),
    (record(created_at="yesterday"), "_regdate", "ISO 8601"),
    (record(created_at="2023-13-01T10:00:00"), "_regdate", "ISO 8601"),
    (record(created_at="2023-05-01T25:00:00"), "_regdate", "ISO 8601"),
    (record(created_at="2023-05-01T10:00:00+25:00"), "_regdate", "ISO 8601"),
    (record(created_at="2023-05-01x10:00"), "_regdate", "ISO 8601"),  # fromisoformat read 10:00
    (record(created_at="2023-05-01+03:00+03:00"), "_regdate", "ISO 8601"),
    (record(created_at=1_682_935_200_000), "_regdate", "milliseconds"),
    (record(created_at=1e20), "_regdate", "out of range"),
    (record(created_at=float("nan")), "_regdate", "finite"),
    (record(created_at=True), "_regdate", "got bool"),
    (record(created_at=[2023, 5, 1]), "_regdate", "got list"),
    # the source key
    (record(id=...), "id", "missing"),
    (record(id=None), "id", "missing"),
    (record(id=""), "id", "missing"),
    (record(id="42\x00"), "id", "U+0000"),
    (record(id=["42"]), "id", "got list"),
]

VALID_CONTACTS: list[tuple[dict[str, Any], dict[str, Any], str, dict[str, Any]]] = [
    (
        record(email="  Anna.Petrova@Example.ORG "),
        {"email": "Anna.Petrova@example.org"},
        "email:anna.petrova@example.org",
        {"email": "Anna.Petrova@example.org", "_regdate": "2023-05-01T10:00:00+03:00"},
    ),
    (
        record(email="anna@xn--e1afmkfd.xn--p1ai", first_name="Ёлка Мария-Анна"),
        {"email": "anna@xn--e1afmkfd.xn--p1ai"},  # sent as given; the ledger knows it in Unicode
        "email:anna@пример.рф",
        {"_fname": "Ёлка Мария-Анна"},
    ),
    (
        record(email="Иван@Пример.РФ"),
        {"email": "Иван@пример.рф"},
        "email:иван@пример.рф",
        {
            "subscriptions": [
                {"channel": "email", "resource_id": 1, "email": "Иван@пример.рф"},
                {"channel": "sms", "resource_id": 1, "phone": "+79001234567"},
            ]
        },
    ),
    (
        record(first_name="\u0415\u0308\u043b\u043a\u0430", phone="8 (900) 123-45-67"),  # decomposed Ё: NFC
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {"_fname": "Ёлка", "phones": ["+79001234567"]},
    ),
    (
        record(first_name="\u0645\u0631\u064a\u0645\u200f", phone=79001234567),  # RTL name with a mark
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {"_fname": "\u0645\u0631\u064a\u0645\u200f", "phones": ["+79001234567"]},
    ),
    (
        record(first_name="Anna\tMaria", points=" 42 ", created_at=datetime(2023, 5, 1, 7, 0, tzinfo=UTC)),
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {"_fname": "Anna\tMaria", "LOYALTY": 42, "_regdate": "2023-05-01T07:00:00+00:00"},
    ),
    (
        record(phone=None, points=Decimal("7"), created_at=date(2023, 5, 1)),
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {
            "LOYALTY": 7,
            "_regdate": "2023-05-01T00:00:00+03:00",
            "subscriptions": [{"channel": "email", "resource_id": 1, "email": "anna.petrova@example.org"}],
        },
    ),
    (
        record(phone="+44 20 7946 0958", points=12.0, created_at=1_700_000_000),
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {"phones": ["+442079460958"], "LOYALTY": 12, "_regdate": "2023-11-15T01:13:20+03:00"},
    ),
    (
        record(created_at="2023-05-01-05:00"),  # a date with an offset: fromisoformat read 05:00 naive
        {"email": "anna.petrova@example.org"},
        "email:anna.petrova@example.org",
        {"_regdate": "2023-05-01T00:00:00-05:00"},
    ),
    (
        record(email="o'brien+news@example.co.uk", points=None, created_at=""),
        {"email": "o'brien+news@example.co.uk"},
        "email:o'brien+news@example.co.uk",
        {"_fname": "Anna"},
    ),
]
