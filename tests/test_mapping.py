"""Record → profile mapping: spec validation, every type coercion, matching modes, broken contacts."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from altcraft.api.matching import MatchingMode
from altcraft.mapping import (
    INVALID_KEY,
    MISSING_KEY,
    Mapper,
    Profile,
    ProfileMapping,
    Rejection,
    encode_json,
    template_columns,
)
from altcraft.validation import MAX_FIELD_CHARS, MAX_PROFILE_BYTES
from tests.broken_contacts import BROKEN_CONTACTS, MAPPING, SOURCE_KEY_COLUMN, VALID_CONTACTS

EXAMPLE_YAML = """
mapping:
  matching: email
  resource_id: 1
  key: {email: email}
  fields:
    _fname: first_name
    _regdate: {source: created_at, type: datetime}
    _bdate: {source: birthday, type: date}
    CRM_ID: {source: id, type: string}
    LOYALTY: {source: points, type: int}
    segment: {const: "b2c"}
    greeting: {template: "Hello, {first_name}!"}
    phones: {source: phone, type: phone}
    interests: {source: tags, type: tags}
    email: {source: email, type: email}
  subscriptions:
    - {channel: email, resource_id: 1, source: email}
    - {channel: sms, resource_id: 1, source: phone}
  timezone: Europe/Moscow
  default_region: RU
  required: [_fname]
"""


def mapper(**spec: Any) -> Mapper:
    spec.setdefault("matching", "profile_id")
    spec.setdefault("key", {"profile_id": "pid"})
    return Mapper(ProfileMapping.model_validate(spec), source_key_column="id")


def profile(result: Profile | Rejection) -> Profile:
    assert isinstance(result, Profile), result
    return result


def rejection(result: Profile | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def one_field(field_type: str, raw: Any, **spec: Any) -> Profile | Rejection:
    """Map `raw` through a single field `f` of `field_type`."""
    return mapper(fields={"f": {"source": "v", "type": field_type}}, **spec).map(
        {"id": 1, "pid": "p1", "v": raw}
    )


# ------------------------------------------------------------------------------------------ the example


def test_the_documented_yaml_example_maps_a_record_completely():
    spec = ProfileMapping.model_validate(yaml.safe_load(EXAMPLE_YAML)["mapping"])
    record = {
        "id": 17,
        "email": " Anna.Petrova@Example.ORG ",
        "phone": "8 (900) 123-45-67",
        "first_name": "Anna",
        "created_at": "2023-05-01 10:00",
        "birthday": date(1990, 2, 3),
        "points": "42",
        "tags": "vip, news, vip",
    }
    result = profile(Mapper(spec, source_key_column="id").map(record))
    assert result == Profile(
        source_key="17",
        match={"email": "Anna.Petrova@example.org"},
        ledger_key="email:anna.petrova@example.org",
        data={
            "_fname": "Anna",
            "_regdate": "2023-05-01T10:00:00+03:00",
            "_bdate": "1990-02-03",
            "CRM_ID": "17",
            "LOYALTY": 42,
            "segment": "b2c",
            "greeting": "Hello, Anna!",
            "phones": ["+79001234567"],
            "interests": ["vip", "news"],
            "email": "Anna.Petrova@example.org",
            "subscriptions": [
                {"channel": "email", "resource_id": 1, "email": "Anna.Petrova@example.org"},
                {"channel": "sms", "resource_id": 1, "phone": "+79001234567"},
            ],
        },
    )
    assert result.batch_item() == {"email": "Anna.Petrova@example.org", "data": result.data}
    assert record["email"] == " Anna.Petrova@Example.ORG "  # the record is not touched


def test_profiles_and_rejections_are_frozen():
    result = profile(mapper().map({"id": 1, "pid": "p"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ledger_key = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ type coercion


@pytest.mark.parametrize(
    ("field_type", "raw", "expected"),
    [
        ("string", "  Anna  ", "Anna"),
        ("string", 42, "42"),
        ("string", Decimal("12.50"), "12.50"),
        ("string", 1.5, "1.5"),
        ("string", UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ("string", "E\u0301te\u0301", "\u00c9t\u00e9"),  # NFC
        ("string", "line one\nline two\ttab\r", "line one\nline two\ttab"),
        ("int", 7, 7),
        ("int", " -42 ", -42),
        ("int", "+5", 5),
        ("int", 3.0, 3),
        ("int", Decimal("8"), 8),
        ("int", 2**63 - 1, 2**63 - 1),
        ("int", -(2**63), -(2**63)),
        ("float", "3.25", 3.25),
        ("float", "-1e3", -1000.0),
        ("float", 2, 2.0),
        ("float", Decimal("0.1"), 0.1),
        ("bool", True, True),
        ("bool", 0, False),
        ("bool", " Yes ", True),
        ("bool", "off", False),
        ("bool", "F", False),
        ("date", "2024-02-29", "2024-02-29"),
        ("date", "20240229", "2024-02-29"),
        ("date", date(2001, 12, 31), "2001-12-31"),
        ("date", datetime(2001, 12, 31, 23, 0), "2001-12-31"),  # naive: its own wall date
        ("date", datetime(2001, 12, 31, 23, 0, tzinfo=UTC), "2001-12-31"),
        ("date", "2001-12-31T23:30:00-05:00", "2002-01-01"),  # an instant: its date in the mapping's UTC
        ("date", 0, "1970-01-01"),
        ("email", "Anna@Example.ORG", "Anna@example.org"),
        ("email", "anna@xn--e1afmkfd.xn--p1ai", "anna@xn--e1afmkfd.xn--p1ai"),  # IDN kept in the given form
        ("phone", "+7 (900) 123-45-67", "+79001234567"),
        ("phone", "8 900 123 45 67", "+79001234567"),
        ("phone", 79001234567, "+79001234567"),
        ("tags", "a, b,,  c ,a", ["a", "b", "c"]),
        ("tags", ["x", " y ", "x", None, ""], ["x", "y"]),
        ("tags", ("solo",), ["solo"]),
        ("tags", 5, ["5"]),
    ],
)
def test_every_type_coerces_its_accepted_inputs(field_type, raw, expected):
    assert profile(one_field(field_type, raw, default_region="RU")).data == {"f": expected}


@pytest.mark.parametrize(
    ("field_type", "raw", "reason"),
    [
        ("string", ["a"], "expected text, got list"),
        ("string", {"a": 1}, "expected text, got dict"),
        ("string", False, "expected text, got bool"),
        ("string", float("nan"), "not a finite number"),
        ("string", Decimal("NaN"), "not a finite number"),
        ("string", date(2020, 1, 1), "expected text, got date"),
        ("int", "abc", "not an integer"),
        ("int", "4.0", "not an integer"),
        ("int", "1" * 5000, "not an integer"),
        ("int", 2**63, "64-bit"),
        ("int", 1e300, "64-bit"),
        ("int", Decimal("2.5"), "fractional"),
        ("int", False, "got bool"),
        ("int", object(), "got object"),
        ("float", "1,5", "not a number"),
        ("float", "nan", "not a number"),
        ("float", "1e999", "not a finite number"),
        ("float", "1e-400", "too close to 0"),  # was sent as 0.0, where 1e999 was refused
        ("float", Decimal("-2.5E-999"), "too close to 0"),
        ("float", 10**400, "not a finite number"),
        ("float", float("-inf"), "not a finite number"),
        ("float", Decimal("sNaN"), "not a finite number"),  # float() raised ValueError: the run failed
        ("float", Decimal("-sNaN7"), "not a finite number"),
        ("float", True, "got bool"),
        ("bool", 2, "not a boolean"),
        ("bool", "maybe", "not a boolean"),
        ("bool", 1.0, "not a boolean"),
        ("date", "2023-02-30", "ISO 8601 date"),
        ("date", "31.12.2001", "ISO 8601 date"),
        ("date", "2001-12-31Tjunk", "ISO 8601 date"),
        ("date", float("inf"), "finite"),
        ("date", [2001], "got list"),
        ("email", "not-an-email", "@-sign"),
        ("email", 5, "got int"),
        ("phone", "+7 900", "too short"),
        ("phone", "+7 900 123 45 67 ext 2", "letters"),
        ("phone", 7.9e10, "got float"),
        ("tags", ["ok", ["nested"]], "expected text, got list"),
        ("tags", "ok, bad\x00", "U+0000"),
        # Python will not write an int of over 4300 digits (a ValueError that failed the whole run)
        *(
            pytest.param(field_type, raw, "integer too long to write as text", id=f"{field_type}-huge-int")
            for field_type, raw in (("string", 10**5000), ("tags", [10**5000]), ("phone", 10**5000))
        ),
    ],
)
def test_every_type_rejects_what_it_cannot_send(field_type, raw, reason):
    result = rejection(one_field(field_type, raw, default_region="RU"))
    assert (result.field, result.source_key) == ("f", "1")
    assert reason in result.reason


class _Unreadable(str):
    """Text of a Python source whose checks raise what none of them foresaw."""

    def strip(self, chars: str | None = None) -> str:
        raise ValueError(f"cannot strip {self}")


@pytest.mark.parametrize(("column", "field"), [("pid", "profile_id"), ("v", "f"), ("n", "g")])
def test_a_value_that_makes_a_check_raise_is_that_records_rejection_naming_its_field(column, field, caplog):
    m = mapper(fields={"f": {"source": "v", "type": "string"}, "g": {"source": "n", "type": "phone"}})
    good = {"id": 1, "pid": "p1", "v": "anna", "n": "+79001234567"}
    bad = {**good, "id": 2, column: _Unreadable("anna.petrova@example.org")}
    result = rejection(m.map(bad))
    assert (result.source_key, result.field, result.reason) == ("2", field, "cannot be read (ValueError)")
    assert profile(m.map(good)).data == {"f": "anna", "g": "+79001234567"}  # the others still map
    assert f"record 2: {field} raised ValueError" in caplog.text and "in strip" in caplog.text  # where
    assert "anna.petrova" not in caplog.text  # never the message: it may hold the value
    caplog.clear()
    assert rejection(m.map({**bad, "id": 3})).field == field
    assert caplog.text == ""  # once per field and error: not a traceback per row of a bad source


def test_a_source_key_that_makes_its_check_raise_is_that_records_rejection(caplog):
    result = rejection(mapper().map({"id": _Unreadable("anna.petrova@example.org"), "pid": "p1"}))
    assert (result.source_key, result.field, result.reason) == (
        INVALID_KEY,
        "id",
        "cannot be read (ValueError)",
    )
    assert "source key id raised ValueError" in caplog.text and "anna.petrova" not in caplog.text


def test_a_field_named_like_the_source_key_column_has_its_own_log_line(caplog):
    m = mapper(fields={"id": {"source": "v", "type": "string"}})
    assert rejection(m.map({"id": _Unreadable("x"), "pid": "p1", "v": "anna"})).field == "id"
    assert rejection(m.map({"id": 2, "pid": "p1", "v": _Unreadable("anna")})).field == "id"

    assert "source key id raised ValueError" in caplog.text
    assert "record 2: id raised ValueError" in caplog.text  # not taken for the source key's, logged before


@pytest.mark.parametrize(
    "field_type", ["string", "int", "float", "bool", "date", "datetime", "email", "phone", "tags"]
)
@pytest.mark.parametrize("raw", [None, "", "   ", []])
def test_empty_values_are_omitted_not_sent(field_type, raw):
    assert profile(one_field(field_type, raw)).data == {}


def test_a_missing_source_column_is_an_empty_value():
    assert profile(mapper(fields={"f": "nowhere"}).map({"id": 1, "pid": "p"})).data == {}


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        ("2023-05-01T10:00:00", "Europe/Moscow", "2023-05-01T10:00:00+03:00"),
        ("2023-05-01 10:00", "UTC", "2023-05-01T10:00:00+00:00"),
        ("2023-05-01T10:00:00.250000", "UTC", "2023-05-01T10:00:00.250000+00:00"),
        ("2023-05-01T10:00:00Z", "Europe/Moscow", "2023-05-01T10:00:00+00:00"),  # aware: kept as given
        ("2023-05-01T10:00:00-04:00", "Europe/Moscow", "2023-05-01T10:00:00-04:00"),
        ("2023-05-01", "Asia/Kolkata", "2023-05-01T00:00:00+05:30"),
        (date(2023, 5, 1), "Europe/Berlin", "2023-05-01T00:00:00+02:00"),
        (datetime(2023, 1, 1, 12, 0), "Europe/Berlin", "2023-01-01T12:00:00+01:00"),
        (
            datetime(2023, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=9))),
            "UTC",
            "2023-01-01T12:00:00+09:00",
        ),
        (0, "Europe/Moscow", "1970-01-01T03:00:00+03:00"),
        (1_700_000_000, "UTC", "2023-11-14T22:13:20+00:00"),
        (1_700_000_000.5, "UTC", "2023-11-14T22:13:20.500000+00:00"),
        (Decimal("1700000000"), "America/New_York", "2023-11-14T17:13:20-05:00"),
        # DST: spring-forward gap (02:30 does not exist in Berlin) moves forward by the gap
        ("2023-03-26T02:30:00", "Europe/Berlin", "2023-03-26T03:30:00+02:00"),
        # DST: fall-back (02:30 happens twice) is its first occurrence, unless the datetime says fold=1
        ("2023-10-29T02:30:00", "Europe/Berlin", "2023-10-29T02:30:00+02:00"),
        (datetime(2023, 10, 29, 2, 30, fold=1), "Europe/Berlin", "2023-10-29T02:30:00+01:00"),
        ("2023-03-12T02:15:00", "America/New_York", "2023-03-12T03:15:00-04:00"),
        # local mean time offsets (seconds) are not RFC 3339: such values are sent in UTC
        ("1850-01-01T00:00:00", "Europe/Berlin", "1849-12-31T23:06:32+00:00"),
    ],
)
def test_datetimes_get_an_rfc3339_offset_from_the_mapping_time_zone(raw, zone, expected):
    assert profile(one_field("datetime", raw, timezone=zone)).data == {"f": expected}


def test_naive_datetimes_in_utc_skip_the_round_trip_with_the_same_text():
    """A naive value in the default zone UTC is placed there directly; Etc/UTC (the same zone under
    another name) takes the round trip through UTC: both give the same text for every value."""
    rng = random.Random(17)
    values: list[Any] = [
        datetime.min,
        datetime.max,
        date.min,
        date.max,
        datetime(2023, 10, 29, 2, 30, fold=1),
    ]
    span = int((datetime.max - datetime.min).total_seconds())
    values += [
        datetime.min + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6))
        for _ in range(2000)
    ]
    values += [value.isoformat() for value in values[5:500]] + [
        rng.randrange(-(2**34), 2**34) for _ in range(200)
    ]
    fast = mapper(fields={"f": {"source": "v", "type": "datetime"}}, timezone="UTC")
    plain = mapper(fields={"f": {"source": "v", "type": "datetime"}}, timezone="Etc/UTC")
    for value in values:
        record = {"id": 1, "pid": "p", "v": value}
        assert fast.map(record) == plain.map(record), value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("yesterday", "ISO 8601 date-time"),
        ("2023-02-30T10:00:00", "ISO 8601 date-time"),
        ("2023-05-01T10:00:00+25:00", "ISO 8601 date-time"),
        ("0001-01-01T00:00:00", "out of range"),
        (1e20, "out of range"),
        (float("nan"), "finite"),
        (True, "got bool"),
    ],
)
def test_impossible_datetimes_are_rejected(raw, reason):
    assert reason in rejection(one_field("datetime", raw, timezone="Europe/Berlin")).reason


@pytest.mark.parametrize("born", [date(1975, 6, 1), date(1971, 3, 1), date(1969, 1, 1), date(1990, 1, 1)])
@pytest.mark.parametrize("field_type", ["date", "datetime"])
def test_epoch_milliseconds_are_refused_not_read_as_seconds_of_another_time(field_type, born):
    """A birthday of 1975 in epoch milliseconds (JavaScript's Date, Java's Instant) was sent as 7382-11-04,
    one of 1969 as 0970-08-31: only those after 1977 were refused (past the year 9999)."""
    millis = int(datetime(born.year, born.month, born.day, tzinfo=UTC).timestamp() * 1000)
    for raw in (millis, float(millis), Decimal(millis)):
        reason = rejection(one_field(field_type, raw)).reason
        assert reason == "epoch seconds out of range (years 1653 to 2286; milliseconds are not read)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(-9_999_999_999, "1653-02-10"), (-2_208_988_800, "1900-01-01"), (9_999_999_999, "2286-11-20")],
)
def test_epoch_seconds_of_any_plausible_time_are_read(raw, expected):
    assert profile(one_field("date", raw)).data == {"f": expected}


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        (datetime(2024, 3, 1, 22, 30, tzinfo=UTC), "Europe/Moscow", "2024-03-02"),
        (datetime(2024, 3, 2, 1, 30, tzinfo=ZoneInfo("Europe/Moscow")), "UTC", "2024-03-01"),
        ("2024-03-01T22:30:00+00:00", "Europe/Moscow", "2024-03-02"),
        ("2024-03-01T22:30:00", "Europe/Moscow", "2024-03-01"),  # naive: a wall time, its own date
        (datetime(2024, 3, 1, 22, 30), "Asia/Tokyo", "2024-03-01"),
        ("2024-03-01+14:00", "UTC", "2024-03-01"),  # a date alone is that date, whatever its offset
    ],
)
def test_an_instant_in_a_date_field_is_on_its_date_in_the_mapping_time_zone(raw, zone, expected):
    """A timestamptz column comes as an aware value in the source session's zone: its own calendar date was
    that zone's, not the mapping's (22:30 UTC on March 1 is March 2 in Moscow)."""
    assert profile(one_field("date", raw, timezone=zone)).data == {"f": expected}


@pytest.mark.parametrize(
    ("field_type", "raw", "expected"),
    [
        ("datetime", datetime(2024, 3, 1, 22, 30), "2024-03-02T01:30:00+03:00"),  # MySQL TIMESTAMP in UTC
        ("datetime", "2024-03-01 22:30", "2024-03-02T01:30:00+03:00"),  # SQLite's or a CSV file's text
        ("datetime", date(2024, 3, 1), "2024-03-01T03:00:00+03:00"),  # its midnight in the source's zone
        ("datetime", "2024-03-01T22:30:00-05:00", "2024-03-01T22:30:00-05:00"),  # an instant, as before
        ("datetime", 1709332200, "2024-03-02T01:30:00+03:00"),
        ("date", datetime(2024, 3, 1, 22, 30), "2024-03-02"),
        ("date", "2024-03-01 22:30", "2024-03-02"),
        ("date", date(2024, 3, 1), "2024-03-01"),  # a date alone is that date
    ],
)
def test_a_sources_naive_values_are_in_its_zone_and_written_in_the_mappings(field_type, raw, expected):
    """A source in UTC, a mapping in Moscow: main read the naive values in the mapping's zone (22:30 UTC went
    out as 22:30 Moscow time, on March 1). A constant is the spec's, in the mapping's zone; so is a key."""
    spec = ProfileMapping(
        matching="custom",
        field_name="seen",
        key={"field_value": "v"},
        fields={
            "seen": {"source": "v", "type": field_type},
            "c": {"const": "2024-03-01 22:30", "type": field_type},
        },
        timezone="Europe/Moscow",
    )
    result = profile(Mapper(spec, source_key_column="id", source_zone="UTC").map({"id": 1, "v": raw}))
    constant = "2024-03-01T22:30:00+03:00" if field_type == "datetime" else "2024-03-01"
    assert (result.match, result.data) == ({"field_value": expected}, {"seen": expected, "c": constant})
    same = Mapper(spec, source_key_column="id", source_zone="Europe/Moscow").map({"id": 1, "v": raw})
    assert profile(same).data["c"] == constant


@pytest.mark.parametrize(
    ("field_type", "raw", "expected"),
    [
        # a date with an offset (XML Schema's xs:date, Java's ISO_DATE) is that date, its midnight there:
        # Python 3.11's fromisoformat read the offset as a time of day (03:00, 05:00 naive)
        ("datetime", "2024-03-01+03:00", "2024-03-01T00:00:00+03:00"),
        ("datetime", "2024-03-01-05:00", "2024-03-01T00:00:00-05:00"),
        ("datetime", "20240301Z", "2024-03-01T00:00:00+00:00"),
        ("date", "2024-03-01-05:00", "2024-03-01"),
        ("date", "2024-03-01+14:00", "2024-03-01"),
        ("datetime", "2024-03-01 05:00", "2024-03-01T05:00:00+03:00"),
        ("datetime", "2024-03-01t05:00:00Z", "2024-03-01T05:00:00+00:00"),
        ("datetime", "2024-W09-5T05:00", "2024-03-01T05:00:00+03:00"),
        ("date", "2024W095", "2024-03-01"),
    ],
)
def test_iso_text_is_read_whole(field_type, raw, expected):
    assert profile(one_field(field_type, raw, timezone="Europe/Moscow")).data == {"f": expected}


@pytest.mark.parametrize(
    ("field_type", "raw"),
    [
        # fromisoformat took any character between date and time, and date.fromisoformat ignored two
        # characters after YYYYMMDD: each of these was sent as a date or time the text does not say
        ("datetime", "2024-03-01x05:00"),
        ("datetime", "2024-03-01_05:00"),
        ("datetime", "2024-03-01+0500:00"),
        ("date", "2024030199"),
        ("date", "20240301xx"),
        ("date", "20240301 x"),
        ("date", "2024-W09"),  # a week, not a day
        ("date", "\uff12\uff10\uff12\uff14-03-01"),  # full-width digits
        ("datetime", "20240301T05300012"),
    ],
)
def test_text_that_is_not_iso_8601_is_rejected_not_guessed(field_type, raw):
    reason = rejection(one_field(field_type, raw, timezone="Europe/Moscow")).reason
    assert "is not an ISO 8601 date" in reason and raw not in reason


def test_phones_target_is_always_a_list_and_other_phone_targets_are_text():
    m = mapper(
        fields={"phones": {"source": "p", "type": "phone"}, "WORK": {"source": "w", "type": "phone"}},
        default_region="RU",
    )
    data = profile(m.map({"id": 1, "pid": "x", "p": "89001234567", "w": "+44 20 7946 0958"})).data
    assert data == {"phones": ["+79001234567"], "WORK": "+442079460958"}
    many = profile(
        m.map({"id": 1, "pid": "x", "p": ["+79001234567", "8 900 123-45-67", None, "+79001234568"]})
    )
    assert many.data == {"phones": ["+79001234567", "+79001234568"]}
    assert rejection(m.map({"id": 1, "pid": "x", "w": ["+79001234567"]})).reason.endswith("got list")


def test_phones_without_country_code_need_a_default_region():
    result = rejection(one_field("phone", "9001234567"))
    assert "no default_region" in result.reason
    assert profile(one_field("phone", "+7 900 123 45 67")).data == {"f": "+79001234567"}


# ------------------------------------------------------------------------------------------ matching modes


#: (mapping spec, source record, the matching keys sent, the ledger key) of every mode
MODE_CASES = [
    (
        {"matching": "email", "key": {"email": "e"}},
        {"e": "Anna@Example.org"},
        {"email": "Anna@example.org"},
        "email:anna@example.org",
    ),
    (
        {"matching": "email_profile", "key": {"email": "e"}},
        {"e": "BOB@X.ORG"},
        {"email": "BOB@x.org"},
        "email_profile:bob@x.org",
    ),
    (
        {"matching": "email_sub", "key": {"email": "e"}, "resource_id": 3},
        {"e": "a@b.co"},
        {"email": "a@b.co"},
        "email_sub:a@b.co",
    ),
    (
        {"matching": "phone", "key": {"phone": "p"}, "default_region": "RU"},
        {"p": "8 (900) 123-45-67"},
        {"phone": "+79001234567"},
        "phone:+79001234567",
    ),
    (
        {"matching": "phone_sub", "key": {"phone": "p"}},
        {"p": "+1 202-555-0143"},
        {"phone": "+12025550143"},
        "phone_sub:+12025550143",
    ),
    (
        {"matching": "profile_id", "key": {"profile_id": "pid"}},
        {"pid": " 65a0c0ffee "},
        {"profile_id": "65a0c0ffee"},
        "profile_id:65a0c0ffee",
    ),
    (
        {"matching": "push_sub", "key": {"provider": "prov", "subscription_id": "sub"}},
        {"prov": "android-firebase", "sub": "tok:123"},
        {"provider": "android-firebase", "subscription_id": "tok:123"},
        "push_sub:android-firebase|tok:123",
    ),
    (
        {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "crm"}},
        {"crm": " C-77 "},
        {"field_value": "C-77"},
        "custom:C-77",
    ),
    (
        {"matching": "custom_sub", "field_name": "TG", "key": {"field_value": "crm"}},
        {"crm": 12345},
        {"field_value": "12345"},
        "custom_sub:12345",
    ),
    (
        {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
        {"e": "Anna@Example.org", "p": "+79001234567"},
        {"email": "Anna@example.org", "phone": "+79001234567"},
        "email_phone:anna@example.org|+79001234567",
    ),
    (
        {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
        {"e": "a@b.co", "p": None},
        {"email": "a@b.co"},
        "email_phone:a@b.co|",
    ),
    (
        {"matching": "email_phone_sub", "key": {"email": "e", "phone": "p"}},
        {"e": " ", "p": "+79001234567"},
        {"phone": "+79001234567"},
        "email_phone_sub:|+79001234567",
    ),
    (
        {"matching": "email_phone_sub", "key": {"phone": "p"}},
        {"p": "+79001234567"},
        {"phone": "+79001234567"},
        "email_phone_sub:|+79001234567",
    ),
]


@pytest.mark.parametrize(("spec", "record", "match", "ledger_key"), MODE_CASES)
def test_every_matching_mode_yields_its_keys_and_ledger_key(spec, record, match, ledger_key):
    result = profile(Mapper(ProfileMapping(**spec), source_key_column="id").map({"id": 9, **record}))
    assert (result.match, result.ledger_key, result.source_key) == (match, ledger_key, "9")


def test_all_eleven_modes_are_covered_above():
    assert {spec["matching"] for spec, *_ in MODE_CASES} == {mode.value for mode in MatchingMode}


def test_a_float_reaches_every_text_path_in_positional_notation():
    """A string field, a template, tags, a custom matching key and the source key all write a float as a
    number column shows it (they wrote ``1e-05`` and ``1e+16``)."""
    m = Mapper(
        ProfileMapping(
            matching="custom",
            field_name="CRM_ID",
            key={"field_value": "code"},
            fields={
                "note": "share",
                "line": {"template": "{share} of {big}"},
                "labels": {"source": "big", "type": "tags"},
            },
        ),
        source_key_column="big",
    )
    result = profile(m.map({"code": 2e-05, "share": 1e-05, "big": 1e16}))
    assert result.source_key == "10000000000000000.0"
    assert result.match == {"field_value": "0.00002"}
    assert result.ledger_key == "custom:0.00002"
    assert result.data == {
        "CRM_ID": "0.00002",
        "note": "0.00001",
        "line": "0.00001 of 10000000000000000.0",
        "labels": ["10000000000000000.0"],
    }


def test_custom_matching_puts_the_key_value_into_data_under_field_name():
    m = Mapper(
        ProfileMapping(
            matching="custom", field_name="CRM_ID", key={"field_value": "crm"}, fields={"_fname": "n"}
        ),
        source_key_column="id",
    )
    assert profile(m.map({"id": 1, "crm": "C-1", "n": "Ann"})).data == {"CRM_ID": "C-1", "_fname": "Ann"}


def test_custom_matching_uses_the_declared_type_of_the_matched_field():
    m = Mapper(
        ProfileMapping(
            matching="custom",
            field_name="LOYALTY_ID",
            key={"field_value": "lid"},
            fields={"LOYALTY_ID": {"source": "lid", "type": "int"}},
        ),
        source_key_column="id",
    )
    result = profile(m.map({"id": 1, "lid": " 0042 "}))
    assert (result.match, result.ledger_key, result.data) == (
        {"field_value": 42},
        "custom:42",
        {"LOYALTY_ID": 42},
    )
    bad = rejection(m.map({"id": 1, "lid": "x42"}))
    assert (bad.field, bad.reason) == ("LOYALTY_ID", "is not an integer")


@pytest.mark.parametrize(
    ("spec", "record", "field"),
    [
        ({"matching": "email", "key": {"email": "e"}}, {}, "email"),
        ({"matching": "phone", "key": {"phone": "p"}}, {"p": "  "}, "phone"),
        (
            {"matching": "push_sub", "key": {"provider": "a", "subscription_id": "b"}},
            {"a": "fcm"},
            "subscription_id",
        ),
        ({"matching": "custom", "field_name": "CRM", "key": {"field_value": "c"}}, {"c": None}, "CRM"),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
            {"e": "", "p": None},
            "email/phone",
        ),
        ({"matching": "profile_id", "key": {"profile_id": "x"}}, {"x": "\t"}, "profile_id"),
    ],
)
def test_a_missing_matching_key_rejects_the_record(spec, record, field):
    result = rejection(Mapper(ProfileMapping(**spec), source_key_column="id").map({"id": 5, **record}))
    assert (result.source_key, result.field, result.reason) == ("5", field, "matching key is missing")


@pytest.mark.parametrize("mode", ["email_phone", "email_phone_sub"])
def test_a_required_key_of_email_phone_is_required(mode):
    """Either key of email_phone matches; ``required: [email]`` (the spec accepts a key there) said that
    email must be there too, and a contact without one was sent all the same."""
    m = Mapper(
        ProfileMapping(matching=mode, key={"email": "e", "phone": "p"}, required=["email"]),
        source_key_column="id",
    )
    result = rejection(m.map({"id": 1, "p": "+79001234567"}))
    assert (result.field, result.reason) == ("email", "matching key is missing")
    assert profile(m.map({"id": 2, "e": "a@b.co"})).match == {"email": "a@b.co"}
    with pytest.raises(pydantic.ValidationError, match="not a field target or key: email"):
        ProfileMapping(matching=mode, key={"phone": "p"}, required=["email"])  # never there: never enforced


def test_an_invalid_half_of_email_phone_is_not_silently_dropped():
    m = Mapper(
        ProfileMapping(matching="email_phone", key={"email": "e", "phone": "p"}), source_key_column="id"
    )
    result = rejection(m.map({"id": 1, "e": "a@b.co", "p": "+7 900"}))
    assert (result.field, result.reason) == ("phone", "is too short")


@pytest.mark.parametrize("bad", ["pid\x00", "a\u202eb", "a\u200bb", "tab\tinside", "x" * 1025])
def test_key_text_refuses_controls_invisible_characters_and_oversize(bad):
    result = rejection(mapper().map({"id": 1, "pid": bad}))
    assert result.field == "profile_id"


# ------------------------------------------------------------------------------------------ source key


@pytest.mark.parametrize(
    ("raw", "source_key"),
    [(17, "17"), (" 17 ", "17"), (UUID(int=5), "00000000-0000-0000-0000-000000000005"), (Decimal("3"), "3")],
)
def test_the_source_key_is_text(raw, source_key):
    assert profile(mapper().map({"id": raw, "pid": "p"})).source_key == source_key


def test_a_source_key_too_long_to_write_is_invalid_and_other_records_map():
    records = [{"id": 10**5000, "pid": "p"}, {"id": 2, "pid": "p", "t": 10**5000}, {"id": 3, "pid": "p"}]
    results = [mapper(fields={"t": {"template": "x{t}"}}).map(record) for record in records]
    assert results[:2] == [
        Rejection(INVALID_KEY, "id", "is an integer too long to write as text"),
        Rejection("2", "t", "is an integer too long to write as text"),
    ]
    assert profile(results[2]).source_key == "3"


@pytest.mark.parametrize(
    ("raw", "text", "key"),
    [
        # what a PostgreSQL or MariaDB numeric(20,10) / DECIMAL(20,10) column gives for 0 and 1e-8: str() of
        # these Decimals wrote 0E-10 and 1E-8, which is no text the database or the user ever saw
        (Decimal("0.0000000000"), "0.0000000000", "0"),
        (Decimal("0.00000001"), "0.00000001", "0.00000001"),
        (Decimal("1E+3"), "1000", "1000"),
        (Decimal("-12.50"), "-12.50", "-12.5"),
    ],
)
def test_a_decimal_is_written_as_the_database_writes_it(raw, text, key):
    """...but for a custom matching key, whose number has one form whatever column holds it
    (tests/test_custom_keys.py)."""
    m = mapper(
        matching="custom",
        field_name="AMOUNT_KEY",
        key={"field_value": "v"},
        fields={
            "note": {"template": "amount {v}"},
            "AMOUNT": {"source": "v"},
            "TAGS": {"source": "v", "type": "tags"},
        },
    )
    result = profile(m.map({"id": raw, "v": raw}))
    assert (result.source_key, result.match, result.ledger_key) == (
        text,
        {"field_value": key},
        f"custom:{key}",
    )
    assert result.data == {"AMOUNT_KEY": key, "note": f"amount {text}", "AMOUNT": text, "TAGS": [text]}


def test_a_decimal_too_long_to_write_is_that_records_rejection():
    """Positional text of Decimal("1E+999999999") is a billion digits: refused as ints beyond Python's
    4300 digits are, before any is written."""
    records = [
        {"id": 1, "pid": "p", "v": Decimal("1E+999999999")},
        {"id": 2, "pid": "p", "v": Decimal("1E-5000")},
    ]
    results = [mapper(fields={"f": {"source": "v"}}).map(record) for record in records]
    assert results == [Rejection(str(n), "f", "is a number too long to write as text") for n in (1, 2)]


@pytest.mark.parametrize("record", [{"pid": "p"}, {"id": None, "pid": "p"}, {"id": " ", "pid": "p"}])
def test_a_record_without_source_key_is_rejected_as_missing(record):
    assert rejection(mapper().map(record)) == Rejection(MISSING_KEY, "id", "source key value is missing")


# ------------------------------------------------------------------------------------------ const, template


def test_const_values_are_coerced_once_by_their_type():
    m = mapper(
        fields={
            "segment": {"const": "b2c"},
            "LEVEL": {"const": "3", "type": "int"},
            "SINCE": {"const": date(2020, 1, 2), "type": "date"},
            "AT": {"const": "2020-01-02T03:04:05", "type": "datetime"},
            "TAGS": {"const": ["a", "b"], "type": "tags"},
            "OPT_IN": {"const": True, "type": "bool"},
        },
        timezone="Europe/Moscow",
    )
    assert profile(m.map({"id": 1, "pid": "p"})).data == {
        "segment": "b2c",
        "LEVEL": 3,
        "SINCE": "2020-01-02",
        "AT": "2020-01-02T03:04:05+03:00",
        "TAGS": ["a", "b"],
        "OPT_IN": True,
    }


def test_templates_render_plain_column_placeholders_only():
    m = mapper(
        fields={
            "greeting": {"template": "Hello, {first name}! {{literal}} #{n}"},
            "CODE": {"template": "{n}", "type": "int"},
        }
    )
    data = profile(m.map({"id": 1, "pid": "p", "first name": " Anna ", "n": 7})).data
    assert data == {"greeting": "Hello, Anna! {literal} #7", "CODE": 7}


def test_a_template_with_an_empty_placeholder_is_omitted_or_rejected_when_required():
    spec = {"greeting": {"template": "Hello, {name}!"}}
    assert profile(mapper(fields=spec).map({"id": 1, "pid": "p", "name": "  "})).data == {}
    result = rejection(mapper(fields=spec, required=["greeting"]).map({"id": 1, "pid": "p"}))
    assert (result.field, result.reason) == ("greeting", "required value is missing")


def test_template_values_are_checked_like_any_text():
    m = mapper(fields={"greeting": {"template": "Hi {name}"}})
    assert rejection(m.map({"id": 1, "pid": "p", "name": ["x"]})).reason == "expected text, got list"
    assert "U+0000" in rejection(m.map({"id": 1, "pid": "p", "name": "a\x00"})).reason


@pytest.mark.parametrize(
    ("template", "parts"),
    [
        ("plain", [("plain", None)]),
        ("{a}-{b}", [("", "a"), ("-", "b")]),
        ("{{x}} {y}!", [("{", None), ("x}", None), (" ", "y"), ("!", None)]),
    ],
)
def test_template_columns_splits_literals_and_columns(template, parts):
    assert template_columns(template) == parts


# ------------------------------------------------------------------------------- subscriptions, required


def test_subscriptions_are_added_in_flat_form_and_skipped_when_their_source_is_empty():
    m = mapper(
        subscriptions=[
            {"channel": "email", "resource_id": 1, "source": "e"},
            {"channel": "sms", "resource_id": 2, "source": "p"},
        ],
        default_region="RU",
    )
    both = profile(m.map({"id": 1, "pid": "p", "e": "A@B.CO", "p": "89001234567"}))
    assert both.data == {
        "subscriptions": [
            {"channel": "email", "resource_id": 1, "email": "A@b.co"},
            {"channel": "sms", "resource_id": 2, "phone": "+79001234567"},
        ]
    }
    assert profile(m.map({"id": 1, "pid": "p", "p": "89001234567"})).data == {
        "subscriptions": [{"channel": "sms", "resource_id": 2, "phone": "+79001234567"}]
    }
    assert profile(m.map({"id": 1, "pid": "p"})).data == {}
    bad = rejection(m.map({"id": 1, "pid": "p", "e": "a@b.co", "p": "12"}))
    assert (bad.field, bad.reason) == ("subscriptions[1]", "is too short")


def test_a_column_complete_records_lack_is_each_records_rejection_naming_the_first_reader():
    """A table's or CSV file's records hold every column, NULL ones too: one the mapping reads that they
    lack is a misnamed column (``Name`` for ``name``), whose field was left out of every profile. Records
    that vary (JSON, APIs) leave an absent column empty, as before."""
    spec = ProfileMapping.model_validate(
        {
            "matching": "profile_id",
            "key": {"profile_id": "pid"},
            "fields": {"_fname": "Name", "_full": {"template": "{Name} {last}"}, "_city": "city"},
            "subscriptions": [{"channel": "email", "resource_id": 1, "source": "mail"}],
        }
    )
    complete = Mapper(spec, source_key_column="id", complete_records=True)
    record = {"id": 1, "pid": "p", "Name": None, "last": "Lee", "city": "Oslo", "mail": None}
    assert profile(complete.map(record)).data == {"_city": "Oslo"}
    for column, field in [
        ("pid", "profile_id"),
        ("Name", "_fname"),
        ("last", "_full"),
        ("mail", "subscriptions[0]"),
    ]:
        lacking = {name: value for name, value in record.items() if name != column}
        reason = f"no column {column!r} in the source's rows (names match exactly, case included)"
        assert complete.map(lacking) == Rejection("1", field, reason)
    assert profile(Mapper(spec, source_key_column="id").map({"id": 1, "pid": "p", "city": "Oslo"})).data == {
        "_city": "Oslo"
    }


def test_required_targets_must_be_present():
    m = mapper(fields={"_fname": "n", "_lname": "l"}, required=["_fname"])
    assert profile(m.map({"id": 1, "pid": "p", "n": "Ann"})).data == {"_fname": "Ann"}
    assert rejection(m.map({"id": 1, "pid": "p", "l": "Lee"})) == Rejection(
        "1", "_fname", "required value is missing"
    )


# ------------------------------------------------------------------------------------------ sizes


def test_field_size_limit_is_exact_and_configurable():
    m = mapper(fields={"a": "a", "t": {"source": "t", "type": "tags"}}, max_field_chars=10)
    assert profile(m.map({"id": 1, "pid": "p", "a": "é" * 10, "t": ["x" * 10]})).data == {
        "a": "é" * 10,
        "t": ["x" * 10],
    }
    assert (
        rejection(m.map({"id": 1, "pid": "p", "a": "x" * 11})).reason
        == "is 11 characters, above the limit of 10"
    )
    assert rejection(m.map({"id": 1, "pid": "p", "t": "ok, " + "y" * 11})).field == "t"


def test_profile_size_limit_is_exact_and_configurable():
    m = mapper(fields={"a": "a", "b": "b"}, max_profile_bytes=200)
    base = profile(m.map({"id": 1, "pid": "p"}))
    room = 200 - len(_encoded(base)) - len('"a":"","b":""')  # bytes left for the values of a and b
    fits = profile(m.map({"id": 1, "pid": "p", "a": "é" * 5, "b": "x" * (room - 10)}))
    assert len(_encoded(fits)) == 200
    over = rejection(m.map({"id": 1, "pid": "p", "a": "é" * 5, "b": "x" * (room - 9)}))
    assert (over.source_key, over.field) == ("1", "<profile>")
    assert over.reason == "encoded profile is 201 bytes, above the limit of 200"


def _encoded(result: Profile) -> bytes:
    import json

    return json.dumps(result.batch_item(), ensure_ascii=False, separators=(",", ":")).encode()


def test_default_limits():
    spec = ProfileMapping(matching="email", key={"email": "e"})
    assert (
        (spec.max_field_chars, spec.max_profile_bytes)
        == (MAX_FIELD_CHARS, MAX_PROFILE_BYTES)
        == (65536, 262144)
    )


# ------------------------------------------------------------------------------------------ spec errors


@pytest.mark.parametrize(
    ("changes", "loc", "message"),
    [
        ({"matching": "emial"}, "matching", "Input should be 'email'"),
        ({"key": {"phone": "p"}}, "key", "phone not a key of matching 'email'"),
        ({"key": {}}, "key", "needs email"),
        ({"matching": "push_sub", "key": {"provider": "p"}}, "key", "needs provider + subscription_id"),
        ({"matching": "email_phone", "key": {}}, "key", "needs email and/or phone"),
        ({"key": {"email": ""}}, "key", "must not be empty"),
        ({"matching": "custom", "key": {"field_value": "c"}}, "field_name", "required for matching 'custom'"),
        ({"field_name": "X"}, "field_name", "only allowed for matching custom"),
        (
            {"matching": "profile_id", "key": {"profile_id": "p"}, "resource_id": 1},
            "resource_id",
            "email/phone",
        ),
        ({"resource_id": 0}, "resource_id", "greater than 0"),
        ({"fields": {"a": {"source": "x", "type": "integer"}}}, "fields.a.type", "Input should be 'string'"),
        ({"fields": {"a": {"source": "x", "typ": "int"}}}, "fields.a.typ", "Extra inputs are not permitted"),
        (
            {"fields": {"a": {"source": "x", "const": "y"}}},
            "fields.a",
            "exactly one of source, const, template",
        ),
        ({"fields": {"a": {}}}, "fields.a", "exactly one of source, const, template (got none)"),
        ({"fields": {"a": {"template": "{x.__class__}"}}}, "fields.a.template", "attribute and index access"),
        ({"fields": {"a": {"template": "{x[0]}"}}}, "fields.a.template", "attribute and index access"),
        ({"fields": {"a": {"template": "{x!r}"}}}, "fields.a.template", "conversions and format specs"),
        ({"fields": {"a": {"template": "{x:>{y}}"}}}, "fields.a.template", "conversions and format specs"),
        ({"fields": {"a": {"template": "{}"}}}, "fields.a.template", "must name a column"),
        ({"fields": {"a": {"template": "{0}"}}}, "fields.a.template", "must name a column"),
        ({"fields": {"a": {"template": "oops {"}}}, "fields.a.template", "malformed"),
        ({"fields": {"a": {"const": "x", "type": "int"}}}, "", "fields.a.const is not an integer"),
        ({"fields": {"a": {"const": " "}}}, "", "fields.a.const is empty"),
        ({"fields": {"email": {"source": "e"}}}, "fields", "email: must have type email"),
        ({"fields": {"phones": {"source": "p", "type": "string"}}}, "fields", "phones: must have type phone"),
        ({"fields": {"subscriptions": "s"}}, "fields", "subscriptions: is set by"),
        ({"fields": {" a": "s"}}, "fields", "non-blank"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"default_region": "XX"}, "default_region", "unknown region"),
        ({"required": ["nope"]}, "required", "not a field target or key: nope"),
        (
            {"subscriptions": [{"channel": "push", "resource_id": 1, "source": "x"}]},
            "subscriptions.0.channel",
            "'sms'",
        ),
        (
            {"subscriptions": [{"channel": "sms", "source": "x"}]},
            "subscriptions.0.resource_id",
            "Field required",
        ),
        ({"max_profile_bytes": 0}, "max_profile_bytes", "greater than 0"),
        ({"extra": 1}, "extra", "Extra inputs are not permitted"),
        (
            {"matching": "custom", "field_name": "C", "key": {"field_value": "c"}, "fields": {"C": "other"}},
            "fields",
            "must come from key.field_value's column",
        ),
        (
            {
                "matching": "custom",
                "field_name": "C",
                "key": {"field_value": "c"},
                "fields": {"C": {"source": "c", "type": "tags"}},
            },
            "fields",
            "a tags field cannot be a matching key",
        ),
    ],
)
def test_spec_errors_name_the_field_at_fault(changes, loc, message):
    with pytest.raises(pydantic.ValidationError) as caught:
        ProfileMapping.model_validate({"matching": "email", "key": {"email": "e"}, **changes})
    errors = caught.value.errors()
    assert [".".join(map(str, error["loc"])) for error in errors] == [loc]
    assert message in errors[0]["msg"]


@pytest.mark.parametrize(
    "matching", ["email", "email_profile", "email_sub", "email_phone", "email_phone_sub"]
)
def test_the_email_field_of_an_email_key_comes_from_the_key_column(matching):
    """A scenario batch item carries the key on the item and as the ``email`` field inside ``data``, which
    both documented readings find (``batch_item_layout: data`` only the field). An ``email`` field from
    another column made the item name two addresses: a data-only reading matched the profile by the field
    while the ledger knew the contact by the key, so two contacts sharing that address were launched twice."""
    spec = {"matching": matching, "key": {"email": "work_email"}, "fields": {"email": "personal_email"}}
    with pytest.raises(
        pydantic.ValidationError, match=r"email: the matched field must come from key\.email's"
    ):
        ProfileMapping.model_validate(
            {**spec, "fields": {"email": {"source": "personal_email", "type": "email"}}}
        )
    for same in ({"source": "work_email", "type": "email"}, None):
        fields = {"email": same} if same else {}
        m = Mapper(
            ProfileMapping.model_validate({**spec, "fields": fields}), source_key_column="id", layout="data"
        )
        item = profile(m.map({"id": 1, "work_email": "a@b.co", "personal_email": "c@d.co"})).batch_item()
        assert item["data"]["email"] == "a@b.co"


@pytest.mark.parametrize("matching", ["phone", "phone_sub", "email_phone", "email_phone_sub"])
def test_the_phones_field_of_a_phone_key_comes_from_the_key_column(matching):
    """The email rule's twin: a batch item carries a phone key as ``phones`` inside ``data`` only when the
    mapping writes none, so ``phones`` from another column left a data-only reading (``batch_item_layout:
    data``, and the hedged layout's data) one number, not the key: Altcraft matched the profile by it while
    the ledger knew the contact by the key. A column listing every phone is refused too: which number of
    a list Altcraft matches by ("by the phones profile field") is not documented."""
    spec = {"matching": matching, "key": {"phone": "mobile"}, "default_region": "RU"}
    for other in ("home", "all_phones"):
        with pytest.raises(
            pydantic.ValidationError, match=r"phones: the matched field must come from key\.phone's"
        ):
            ProfileMapping.model_validate({**spec, "fields": {"phones": {"source": other, "type": "phone"}}})
    record = {"id": 1, "mobile": "+79001234567", "home": "+79001234568"}
    for fields in ({"phones": {"source": "mobile", "type": "phone"}}, {}):
        m = Mapper(
            ProfileMapping.model_validate({**spec, "fields": fields}), source_key_column="id", layout="data"
        )
        assert profile(m.map(record)).batch_item()["data"]["phones"] == ["+79001234567"]
    # a field matched on by a combined mode needs its key: from no key column, the item named two profiles
    with pytest.raises(pydantic.ValidationError, match=r"email: matching 'email_phone' matches on it"):
        ProfileMapping.model_validate(
            {
                "matching": "email_phone",
                "key": {"phone": "mobile"},
                "fields": {"email": {"source": "m", "type": "email"}},
            }
        )
    for mode in ("email", "profile_id"):  # phones are no key of these: any column
        key = {"email": "e"} if mode == "email" else {"profile_id": "pid"}
        fields = {"phones": {"source": "all_phones", "type": "phone"}}
        ProfileMapping.model_validate({"matching": mode, "key": key, "fields": fields})


def test_spec_shorthand_region_case_and_yaml_dates():
    spec = ProfileMapping.model_validate(
        yaml.safe_load(
            "matching: email\nkey: {email: e}\ndefault_region: ru\n"
            "fields:\n  a: col\n  d: {const: 2020-01-02, type: date}"
        )
    )
    assert spec.default_region == "RU"
    assert spec.fields["a"].source == "col" and spec.fields["a"].type == "string"
    assert spec.fields["d"].const == date(2020, 1, 2)
    assert profile(Mapper(spec, source_key_column="id").map({"id": 1, "e": "a@b.co"})).data == {
        "d": "2020-01-02"
    }


# ------------------------------------------------------------------------------------------ broken contacts


@pytest.fixture(scope="module")
def contacts_mapper() -> Mapper:
    return Mapper(ProfileMapping.model_validate(MAPPING), source_key_column=SOURCE_KEY_COLUMN)


def test_the_broken_contact_set_is_varied():
    assert len(BROKEN_CONTACTS) >= 30
    assert len({repr(record) for record, _, _ in BROKEN_CONTACTS}) == len(BROKEN_CONTACTS)


@pytest.mark.parametrize(("record", "field", "reason"), BROKEN_CONTACTS, ids=range(len(BROKEN_CONTACTS)))
def test_every_broken_contact_is_rejected_with_its_field_and_reason(contacts_mapper, record, field, reason):
    result = rejection(contacts_mapper.map(record))
    assert result.field == field
    assert reason in result.reason
    for column in ("email", "phone"):
        value = record.get(column)
        if isinstance(value, str) and len(value.strip()) >= 4:
            assert value.strip() not in result.reason


@pytest.mark.parametrize(
    ("record", "match", "ledger_key", "data"), VALID_CONTACTS, ids=range(len(VALID_CONTACTS))
)
def test_tricky_but_valid_contacts_map(contacts_mapper, record, match, ledger_key, data):
    result = profile(contacts_mapper.map(record))
    assert (result.match, result.ledger_key) == (match, ledger_key)
    assert {key: result.data.get(key) for key in data} == data


# A batch item's values as the coercers make them: text (any code point but lone surrogates), int64, finite
# floats, bools, lists of text and nested objects (subscriptions).
_ITEM_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _ITEM_VALUES, max_size=6))
def test_encode_json_is_the_standard_compact_json(item: dict[str, Any]) -> None:
    """The fast encoder of profiles writes what json.dumps writes, up to a float's exponent spelling."""
    standard = json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    fast = encode_json(item)
    assert json.loads(fast) == json.loads(standard)
    if not any(isinstance(v, float) for v in _leaves(item)):
        assert fast == standard


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
