"""The mapper sends and rejects exactly what it did before its per-contact fast paths.

`tests.mapping_reference` is the mapper as it was (commit 2692d46). Every record of a large corpus maps to
the same result through both: the same `Profile` (source key, match, ledger key, data with its order and
value types, the encoded bytes, layout, key field) or the same `Rejection` (source key, field, reason).
The corpus: mappings of every matching mode, field type, layout, template, constant, subscription, time
zone, region and limit; in each column and key, the values of the other tests (broken and valid contacts,
every coercion case, samples of the email and phone corpora of the validation fast-path test) and
generated ones (odd text, numbers, dates, containers).

A reference rather than outputs frozen in a fixture: the email and phone verdicts come from email-validator
and phonenumbers, which are not pinned (phonenumbers' metadata changes every month). Both sides call the
same libraries, so an upgrade changes both alike, and the corpus can be as large as needed.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import Enum, IntEnum
from http import HTTPStatus
from typing import Any
from uuid import UUID

import pytest

import tests.test_mapping as mapping_tests
from altcraft.api.layouts import BatchItemLayout
from altcraft.api.matching import MatchingMode
from altcraft.mapping import Mapper, Profile, ProfileMapping, Rejection
from altcraft.records import ERROR_FIELD, error_record
from tests import mapping_reference, test_validation_fast_path
from tests.broken_contacts import BROKEN_CONTACTS, VALID_CONTACTS

SEED = 20260101
LAYOUTS = list(BatchItemLayout)
TYPES = ["string", "int", "float", "bool", "date", "datetime", "email", "phone", "tags"]

# ------------------------------------------------------------------------------------------- values


def parametrized(test: Any) -> list[Any]:
    """Every argument value of ``test``'s parametrize marks."""
    values: list[Any] = []
    for mark in test.pytestmark:
        names = mark.args[0]
        single = len(names.split(",") if isinstance(names, str) else names) == 1
        for case in mark.args[1]:
            args = case.values if hasattr(case, "values") else ((case,) if single else case)
            values += args
    return values


def values_of_tests() -> list[Any]:
    """The source values of the mapping tests and the broken and valid contacts."""
    tests = [
        mapping_tests.test_every_type_coerces_its_accepted_inputs,
        mapping_tests.test_every_type_rejects_what_it_cannot_send,
        mapping_tests.test_empty_values_are_omitted_not_sent,
        mapping_tests.test_datetimes_get_an_rfc3339_offset_from_the_mapping_time_zone,
        mapping_tests.test_impossible_datetimes_are_rejected,
        mapping_tests.test_key_text_refuses_controls_invisible_characters_and_oversize,
        mapping_tests.test_the_source_key_is_text,
    ]
    values = [value for test in tests for value in parametrized(test)]
    records = [record for record, *_ in BROKEN_CONTACTS + VALID_CONTACTS]
    records += [record for _, record, *_ in mapping_tests.MODE_CASES]
    return values + [value for record in records for value in record.values()]


ODD_TEXT = [
    "",
    " ",
    "\t",
    " \n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000 ",  # what str.strip strips
    "Anna",
    "  Anna Maria  ",
    "x" * 10,
    "x" * 11,
    "é" * 10,
    "é" * 11,
    "x" * 1024,
    "x" * 1025,
    "x" * 65_536,
    "x" * 65_537,
    "a\x00",
    "a\x07b",
    "a\tb",
    " a\tb ",
    "a\nb",
    "a\rb",
    "a\x7f",
    "a\x80",
    "a\x9f",
    "a\xad",
    "a\u200bb",
    "a\u200eb",
    "\ufeffanna",
    "a\u2066b",
    "\U000e0041",
    "\ud800",
    "a\udfffb",
    "E\u0301te\u0301",
    "\u0415\u0308\u043b\u043a\u0430",
    "Ёлка",
    "\ufb01",
    "\U0001f600",
    "٣",
    "١٢٣",
    "\uff11\uff12",
    "true",
    "YES",
    " off ",
    "T",
    "1",
    "0",
    "-0",
    "+5",
    " -42 ",
    "1_000",
    "4.0",
    "1e3",
    ".5",
    "5.",
    "-.5e-3",
    "1,5",
    "nan",
    "inf",
    "-Infinity",
    "1e999",
    "9" * 19,
    "9" * 20,
    "9" * 21,
    "-9223372036854775808",
    "9223372036854775808",
    "2024-02-29",
    "2023-02-29",
    "20240229",
    "2024-W09-4",
    "2023-05-01T10:00:00",
    "2023-05-01 10:00",
    "2023-05-01T10:00:00.250000",
    "2023-05-01T10:00:00Z",
    "2023-05-01T10:00:00-04:00",
    "2023-05-01T10:00:00+25:00",
    "2023-03-26T02:30:00",
    "2023-10-29T02:30:00",
    "2023-03-12T02:15:00",
    "1850-01-01T00:00:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "yesterday",
    "a, b,,  c ,a",
    ",,,",
    "ok, bad\x00",
    "vip, news, vip",
    "{x}",
    "a|b",
    "a:b",
    "ΣΑΣ",
    "+79001234567",
    "+7 900 123-45-67",
    "8 (900) 123-45-67",
    "89001234567",
    "9001234567",
    "+79001234567 ",
    "+7\t900",
    "+44 20 7946 0958",
    "+1 202-555-0143",
    "+999 123 456 789",
    "+7 900 CALL-ME",
    "+79001234567 ext 2",
    "+79001234567x",
    "+7900123456789012345678",
    "+800 1234 5678",
    "+882 1234 5678",
    "+",
    "+0",
    "+70",
    "+7 8 900 123 45 67",
    "+3851234567",
    "anna@example.org",
    " Anna.Petrova@Example.ORG ",
    "anna@xn--e1afmkfd.xn--p1ai",
    "Anna@Пример.РФ",
    "\u03c3@example.org",
    "\u03a3@example.org",  # the ledger key lowers "email:\u03a3": a final sigma there, not alone
    "ΣΑΣ@example.org",
    "ας@example.gr",
    "postmaster@example.org",
    "PostMaster@Example.org",
    "anna@example",
    "anna@",
    "@example.org",
    "a@b@example.org",
    "anna@example.org\x00",
]


class NoOffset(tzinfo):
    """A time zone that knows no offset: its date-times count as naive."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


class Tagged(str):
    """Text that writes itself otherwise (``str()``) and strips nothing: a driver's or an enum's text."""

    def __str__(self) -> str:
        return f"<{self.upper()}>"

    def strip(self, chars: str | None = None) -> str:
        return str.__str__(self)


class Channel(str, Enum):  # ruff: ignore[replace-str-enum] -- its str() is Channel.SMS, not its text
    SMS = "+79001234567"
    MAIL = " anna@example.org "


ODD_VALUES: list[Any] = [
    Tagged(" anna@example.org "),
    Tagged("+79001234567"),
    Tagged(" 42 "),
    *Channel,
    HTTPStatus.OK,
    IntEnum("Level", "LOW HIGH").HIGH,
    None,
    [],
    (),
    [None],
    [""],
    ["  ", None],
    ["a", "a", " a "],
    ("solo",),
    ["x", ["nested"]],
    [1, 2, 2],
    ["+79001234567", "8 900 123-45-67", None, "+79001234568"],
    ["anna@example.org"],
    [True],
    [datetime(2020, 1, 1)],
    {},
    {"a": 1},
    set(),
    {"x"},
    frozenset({"y"}),
    b"bytes",
    bytearray(b"x"),
    object(),
    True,
    False,
    0,
    1,
    -1,
    2,
    42,
    79001234567,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    10**19,
    10**20,
    10**21,
    10**1023,
    10**1024,
    10**4299,
    10**5000,
    0.0,
    -0.0,
    1.0,
    1.5,
    -2.5,
    3.0,
    1e15,
    1e16,
    1e20,
    1e300,
    2.0**63,
    7.9e10,
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("0"),
    Decimal("7"),
    Decimal("12.50"),
    Decimal("2.5"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("1e30"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("1700000000"),
    UUID(int=1),
    date(2023, 5, 1),
    date.min,
    date.max,
    datetime(2023, 5, 1, 10, 0),
    datetime(2023, 5, 1, 10, 0, tzinfo=UTC),
    datetime(2023, 5, 1, 10, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=9))),
    datetime(2023, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))),
    datetime(2023, 10, 29, 2, 30, fold=1),
    datetime(2023, 5, 1, 10, 0, tzinfo=NoOffset()),
    datetime(2023, 3, 26, 2, 30),
    datetime.min,
    datetime.max,
    datetime.min.replace(tzinfo=UTC),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    time(10, 30),
    timedelta(days=1),
    1_700_000_000,
    1_700_000_000.5,
    -(2**40),
]


def generated_values(rng: random.Random) -> list[Any]:
    """Random text over printable ASCII, white space, controls, invisible and combining characters,
    surrogates and non-ASCII digits; random ints, floats and Decimals of every size."""
    odd = "\x00\x01\x07\t\n\x0b\x0c\r\x1c\x1f\x7f\x80\x85\x9f\xa0\xad\u0301\u0308\u200b\u200f\u202e\u2028"
    odd += "\u3000\ufeff\ud800\udc80\U0001f600éЁΣς٣१@@..,,||::++"
    alphabet = string.printable + odd
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 16))) for _ in range(400)]
    texts += [
        "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 12))) for _ in range(100)
    ]
    numbers: list[Any] = [
        rng.randint(-(10 ** rng.randint(0, 25)), 10 ** rng.randint(0, 25)) for _ in range(150)
    ]
    numbers += [rng.uniform(-1e12, 1e12) for _ in range(50)] + [
        float(rng.randint(-99, 99)) for _ in range(30)
    ]
    numbers += [Decimal(rng.randint(-(10**12), 10**12)) / Decimal(10 ** rng.randint(0, 4)) for _ in range(50)]
    return texts + [str(number) for number in numbers[:100]] + numbers


def corpus_values() -> list[Any]:
    """The values tried in every column, each once."""
    values = values_of_tests() + ODD_TEXT + ODD_VALUES + generated_values(random.Random(SEED))
    return list({(type(value), shown(value)): value for value in values}.values())


def shown(value: Any) -> str:
    """``repr(value)``, or a stand-in for a value holding an int too long to write."""
    try:
        return repr(value)
    except ValueError:
        return f"<{type(value).__name__} {id(value)} holding an int too long to write>"


def contact_values() -> list[Any]:
    """Samples of the email and phone corpora: tried in the email and phone columns and keys."""
    emails = test_validation_fast_path.email_corpus()[::40]
    phones = [value for value, _ in itertools.islice(test_validation_fast_path.phone_corpus(), 0, None, 50)]
    return emails + phones


# ------------------------------------------------------------------------------------------ mappings


def typed_fields(**extra: Any) -> dict[str, Any]:
    """A field of every type from its own column, templates and constants."""
    return {
        "S": "c_string",
        "I": {"source": "c_int", "type": "int"},
        "FL": {"source": "c_float", "type": "float"},
        "B": {"source": "c_bool", "type": "bool"},
        "D": {"source": "c_date", "type": "date"},
        "DT": {"source": "c_datetime", "type": "datetime"},
        "email": {"source": "c_email", "type": "email"},
        "WORK": {"source": "c_phone", "type": "phone"},
        "phones": {"source": "c_phones", "type": "phone"},
        "T": {"source": "c_tags", "type": "tags"},
        "GREETING": {"template": "Hi {c_string}, {c_int}!"},
        "CODE": {"template": "{c_int}", "type": "int"},
        "WHEN": {"template": "{c_date}", "type": "datetime"},
        "SEGMENT": {"const": "b2c"},
        "LEVEL": {"const": "3", "type": "int"},
        "SINCE": {"const": date(2020, 1, 2), "type": "date"},
        **extra,
    }


SUBSCRIPTIONS = [
    {"channel": "email", "resource_id": 1, "source": "c_email"},
    {"channel": "sms", "resource_id": 2, "source": "c_phone"},
]
CUSTOM_KEYS = {
    "string": " C-77 ",
    "int": "0042",
    "float": "2.5",
    "date": "2023-05-01",
    "datetime": "2023-05-01T10:00",
    "email": "crm@example.org",
    "phone": "+79001234569",
}
"""Custom matching on a field of every type that can be a key (not tags, not bool): a good key of each."""
GOOD: dict[str, Any] = {
    "id": 7,
    "pid": "p-7",
    "c_string": " Anna ",
    "c_int": "42",
    "c_float": 1.5,
    "c_bool": "yes",
    "c_date": "2023-05-01",
    "c_datetime": "2023-05-01T10:00:00",
    "c_email": "Anna@Example.org",
    "c_phone": "+79001234567",
    "c_phones": "+7 900 123-45-67",
    "c_tags": "vip, news",
    "e": "anna@example.org",
    "p": "+79001234568",
    "prov": "android-firebase",
    "sub": "tok:123",
    "crm": "C-77",
    **{f"crm_{type_}": value for type_, value in CUSTOM_KEYS.items()},
}
"""A record every mapping below sends."""

FIELD_MAPPINGS: list[dict[str, Any]] = [
    {
        "matching": "profile_id",
        "key": {"profile_id": "pid"},
        "fields": typed_fields(),
        "subscriptions": SUBSCRIPTIONS,
        "timezone": "Europe/Berlin",
        "default_region": "RU",
        "required": ["S", "email", "GREETING"],
    },
    {
        "matching": "email_phone",
        "key": {
            "email": "c_email",
            "phone": "c_phones",
        },  # the email and phones fields' columns (ProfileMapping)
        "fields": typed_fields(),
        "max_field_chars": 12,
        "max_profile_bytes": 380,
    },
    {
        "matching": "custom",
        "field_name": "I",
        "key": {"field_value": "c_int"},
        "fields": typed_fields(),
        "subscriptions": SUBSCRIPTIONS[1:],
        "timezone": "America/New_York",
        "default_region": "US",
        "required": ["phones", "T"],
    },
    {
        "matching": "email",
        "resource_id": 3,
        "key": {"email": "c_email"},
        "fields": typed_fields(),
        "subscriptions": SUBSCRIPTIONS,
        "timezone": "Asia/Kolkata",
        "default_region": "GB",
        "max_profile_bytes": 490,
    },
]
"""Mappings of every field type, each column tried with every value."""

KEY_FIELDS = {
    "_fname": "c_string",
    "CRM": {"source": "id", "type": "string"},
    "LOYALTY": {"source": "c_int", "type": "int"},
    "phones": {"source": "c_phones", "type": "phone"},
}


def key_mappings() -> list[dict[str, Any]]:
    """Every matching mode's mapping of the mapping tests, and custom matching on a field of every type
    but tags and bool (which cannot be keys); each key column is tried with every value."""
    specs = [spec for spec, *_ in mapping_tests.MODE_CASES]
    for mode, type_ in itertools.product(("custom", "custom_sub"), CUSTOM_KEYS):
        column = f"crm_{type_}"
        fields = {"X": {"source": column, "type": type_}}
        specs.append({"matching": mode, "field_name": "X", "key": {"field_value": column}, "fields": fields})
    return [
        {**spec, "default_region": region, "fields": {**key_fields(spec), **spec.get("fields", {})}}
        for spec, region in zip(specs, itertools.cycle(["RU", None]), strict=False)
    ]


def key_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """`KEY_FIELDS`, with ``phones`` from the phone key's column where the mode matches on phones (a mapping
    must take it from there: `ProfileMapping`), and without it where that key is not given."""
    if "phone" not in MatchingMode(spec["matching"]).key_fields:
        return KEY_FIELDS
    fields = {name: value for name, value in KEY_FIELDS.items() if name != "phones"}
    if "phone" in spec["key"]:
        fields["phones"] = {"source": spec["key"]["phone"], "type": "phone"}
    return fields


# --------------------------------------------------------------------------------------- comparison


def outcome(mapper: Any, record: dict[str, Any]) -> tuple[Any, ...]:
    """What ``mapper.map(record)`` gives, every field in full (by repr: dict order, True apart from 1)."""
    try:
        result = mapper.map(record)
    except Exception as error:  # a value that breaks one must break the other alike
        return ("raised", type(error), str(error))
    if type(result) is Profile:
        return (Profile, *(repr(getattr(result, name)) for name in Profile.__slots__))
    assert type(result) is Rejection, result
    return (Rejection, repr(result.source_key), repr(result.field), repr(result.reason))


def records(mapping: dict[str, Any], columns: list[str], values: list[Any]) -> Iterator[dict[str, Any]]:
    """`GOOD`, then `GOOD` with each of ``columns`` set to each of ``values`` and left out."""
    yield GOOD
    for column in columns:
        yield {name: value for name, value in GOOD.items() if name != column}
        for value in values:
            yield {**GOOD, column: value}


@pytest.fixture(scope="module")
def values() -> list[Any]:
    return corpus_values()


@pytest.fixture(scope="module")
def contacts() -> list[Any]:
    return contact_values()


def compare(specs: list[dict[str, Any]], cases: Any) -> dict[type, int]:
    """Map each spec's records (``cases(spec)``) through both mappers in each layout (one layout per
    record, in turn); fail listing the first differences. Counts profiles and rejections."""
    differences: list[str] = []
    counts: dict[type, int] = {Profile: 0, Rejection: 0}
    for spec in specs:
        mapping = ProfileMapping.model_validate(spec)
        pairs = [
            (
                Mapper(mapping, source_key_column="id", layout=layout),
                mapping_reference.Mapper(mapping, source_key_column="id", layout=layout),
            )
            for layout in LAYOUTS
        ]
        for record, (new, old) in zip(cases(spec), itertools.cycle(pairs), strict=False):
            got, expected = outcome(new, record), outcome(old, record)
            counts[expected[0]] = counts.get(expected[0], 0) + 1
            if got != expected and len(differences) < 10:
                changed = {
                    column: shown(value)[:200]
                    for column, value in record.items()
                    if GOOD.get(column) is not value
                }
                differences.append(
                    f"mapping #{specs.index(spec)} ({spec['matching']}), {new._layout}, {changed}:\n"
                    f"  new {got!r:.600}\n  was {expected!r:.600}"
                )
    assert not differences, "\n".join(differences)
    return counts


def test_every_field_type_maps_as_before(values, contacts):
    columns = [f"c_{type_}" for type_ in TYPES] + ["c_phones"]
    contact_columns = ["c_email", "c_phone", "c_phones"]

    def cases(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from records(spec, columns, values)
        yield from records(spec, contact_columns, contacts)

    counts = compare(FIELD_MAPPINGS, cases)
    assert counts[Profile] > 12_000 and counts[Rejection] > 40_000, counts


def test_every_matching_key_and_source_key_maps_as_before(values, contacts):
    specs = key_mappings()

    def cases(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        columns = list(spec["key"].values())
        yield from records(spec, columns + (["id"] if spec is specs[0] else []), values)
        yield from records(spec, columns, contacts)
        yield error_record("id", "line 3", "anna@example.org +79001234567")
        yield error_record("id", "", "unreadable")
        yield {**GOOD, ERROR_FIELD: "anna@example.org +79001234567"}  # a column of that name: data
        yield {**GOOD, ERROR_FIELD: None}

    counts = compare(specs, cases)
    assert counts[Profile] > 20_000 and counts[Rejection] > 40_000, counts


def test_random_records_map_as_before(values, contacts):
    """Records with several columns changed at once, so later fields see odd values after good ones."""
    rng = random.Random(SEED)
    pool = values + contacts

    def cases(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for _ in range(1_500):
            yield {
                column: rng.choice(pool) if rng.random() < 0.15 else value for column, value in GOOD.items()
            }

    counts = compare(FIELD_MAPPINGS + key_mappings()[::3], cases)
    assert counts[Profile] > 7_000 and counts[Rejection] > 5_000, counts
