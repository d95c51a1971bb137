"""Value validators: email, phone, text rules (controls, unicode, sizes), key text."""

from __future__ import annotations

import pickle
from decimal import Decimal
from uuid import UUID

import pytest

from altcraft.validation import (
    MAX_FIELD_CHARS,
    MAX_KEY_CHARS,
    MAX_PROFILE_BYTES,
    ValidationError,
    as_text,
    check_text,
    key_text,
    normalize_email,
    normalize_phone,
)


def reason_of(call, *args, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_limits_are_the_documented_constants():
    assert (MAX_FIELD_CHARS, MAX_PROFILE_BYTES, MAX_KEY_CHARS) == (64 * 1024, 256 * 1024, 1024)


def test_validation_error_carries_field_and_reason_and_pickles():
    error = ValidationError("email", "is not valid")
    assert (error.field, error.reason, str(error)) == ("email", "is not valid", "email: is not valid")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.reason) == ("email", "is not valid")
    assert isinstance(error, ValueError)


# ------------------------------------------------------------------------------------------------- email


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("anna@example.org", "anna@example.org"),
        ("  Anna.Petrova@EXAMPLE.Org\n", "Anna.Petrova@example.org"),
        ("o'brien+tag@sub.example.co.uk", "o'brien+tag@sub.example.co.uk"),
        ("anna@xn--e1afmkfd.xn--p1ai", "anna@xn--e1afmkfd.xn--p1ai"),  # never turned into Unicode
        ("анна@Пример.РФ", "анна@пример.рф"),
        ("e\u0301lise@example.org", "\u00e9lise@example.org"),  # NFC
    ],
)
def test_valid_emails_are_normalised(raw, normalized):
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("secretname", "@-sign"),
        ("secretname@@example.org", "invalid characters"),
        ("secret name@example.org", "invalid characters"),
        ("secretname@example.org.", "period"),
        ("secretname@localhost", "period"),
        ("secretname@example.invalid", "special-use"),
        ("secretname@xn--a.com", "IDNA"),
        ("secretname@ab\u0663\u06f3.com", "after the @-sign is invalid"),
        ("s" * 250 + "@example.org", "too long"),
        ("secretname@exa\u202emple.com", "U+202E"),
        ("secretname\x00@example.org", "U+0000"),
        ("secretname\ud800@example.org", "lone surrogate"),
        ("x" * (MAX_KEY_CHARS + 1), "above the limit"),
    ],
)
def test_invalid_emails_are_refused_without_quoting_the_address(raw, reason):
    error = reason_of(normalize_email, raw, field="key.email")
    assert error.field == "key.email"
    assert reason in error.reason
    assert "secretname" not in error.reason and "example" not in error.reason


@pytest.mark.parametrize("raw", [None, 42, ["a@b.co"], b"a@b.co"])
def test_emails_must_be_text(raw):
    assert reason_of(normalize_email, raw).reason.startswith("expected text, got ")


# ------------------------------------------------------------------------------------------------- phone


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+79001234567", None, "+79001234567"),
        ("+7 (900) 123-45-67", None, "+79001234567"),
        ("8 (900) 123 45 67", "RU", "+79001234567"),
        ("9001234567", "RU", "+79001234567"),
        ("79001234567", "RU", "+79001234567"),
        (79001234567, "RU", "+79001234567"),
        ("+44 20.7946.0958", None, "+442079460958"),
        ("(202) 555-0143", "US", "+12025550143"),
        ("00 7 900 1234567", "DE", "+79001234567"),
    ],
)
def test_valid_phones_become_e164(raw, region, e164):
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("+7 900 CALL-ME", None, "letters"),
        ("1-800-FLOWERS", "US", "letters"),
        ("+7 900 123 45 67 ext 5", None, "letters"),
        ("+7 900 123+45", None, "letters"),
        ("9001234567", None, "no +country code"),
        ("12345", "RU", "too short"),
        ("+7", None, "not a phone number"),
        ("+7 900 123 45 67 89", None, "impossible length"),
        ("+7 000 123 45 67", None, "not a valid number"),
        ("202 555 0143", "RU", "not a valid number"),
        ("+999 123 456 789", None, "unknown country code"),
        ("+", None, "not a phone number"),
        ("+7\u200b9001234567", None, "U+200B"),
        ("+7 900 123 45 67\n", None, None),  # surrounding whitespace is fine
    ],
)
def test_impossible_phones_are_refused(raw, region, reason):
    if reason is None:
        assert normalize_phone(raw, region) == "+79001234567"
        return
    error = reason_of(normalize_phone, raw, region, field="phones")
    assert (error.field, reason in error.reason) == ("phones", True)
    assert "9001234567" not in error.reason


@pytest.mark.parametrize("raw", [True, 7.9e10, None, ["+79001234567"], Decimal("79001234567")])
def test_phones_must_be_text_or_int(raw):
    assert "expected a phone number as text" in reason_of(normalize_phone, raw, "RU").reason


# ------------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    "allowed", ["tab\there", "new\nline", "cr\r\nlf", "emoji \U0001f600", "مريم\u200f", "a\u00adb"]
)
def test_free_text_allows_tab_newline_and_format_characters(allowed):
    assert check_text(allowed) == allowed


@pytest.mark.parametrize("code", [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x80, 0x85, 0x9F])
def test_free_text_refuses_other_controls(code):
    error = reason_of(check_text, f"a{chr(code)}b", field="_fname")
    assert (error.field, error.reason) == (
        "_fname",
        f"contains a control or invisible character (U+{code:04X})",
    )


@pytest.mark.parametrize(
    "bad",
    [
        "\t",
        "\n",
        "\r",
        "\u00ad",
        "\u061c",
        "\u200b",
        "\u200d",
        "\u200e",
        "\u202a",
        "\u202e",
        "\u2066",
        "\ufeff",
        "\U000e0041",
    ],
)
def test_keys_refuse_every_control_and_invisible_character(bad):
    assert "U+" in reason_of(check_text, f"key{bad}value", key=True).reason
    assert check_text(f"key{bad}value".replace(bad, "")) == "keyvalue"


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "a\udc80b"])
def test_lone_surrogates_are_refused(surrogate):
    for key in (False, True):
        assert (
            reason_of(check_text, surrogate, key=key).reason == "contains a lone surrogate (invalid unicode)"
        )


def test_text_is_normalised_to_nfc():
    assert check_text("Cafe\u0301") == "Caf\u00e9"
    assert check_text("\u212b") == "\u00c5"  # ANGSTROM SIGN


def test_size_limit_is_exact_in_characters():
    assert check_text("é" * 10, max_chars=10) == "é" * 10
    assert reason_of(check_text, "é" * 11, max_chars=10).reason == "is 11 characters, above the limit of 10"
    assert check_text("x" * MAX_FIELD_CHARS) == "x" * MAX_FIELD_CHARS
    assert "above the limit of 65536" in reason_of(check_text, "x" * (MAX_FIELD_CHARS + 1)).reason


def test_check_text_refuses_non_text():
    assert reason_of(check_text, 5).reason == "expected text, got int"


# ------------------------------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("raw", "text"),
    [("a", "a"), (5, "5"), (Decimal("1.50"), "1.50"), (0.5, "0.5"), (UUID(int=0), str(UUID(int=0)))],
)
def test_as_text_accepts_scalars(raw, text):
    assert as_text(raw, field="f") == text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (1e-05, "0.00001"),
        (-2.5e-07, "-0.00000025"),
        (1e16, "10000000000000000.0"),
        (1.234e20, "123400000000000000000.0"),
        (1e15, "1000000000000000.0"),  # str's own positional forms are unchanged
        (0.0001, "0.0001"),
        (-0.0, "-0.0"),
    ],
)
def test_a_float_is_text_in_positional_notation(raw, text):
    """``str`` wrote 1e-05 and 1e+16: a text field got an exponent, as no number column writes its value."""
    assert as_text(raw, field="f") == text
    assert float(text) == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (True, "got bool"),
        (b"x", "got bytes"),
        ([], "got list"),
        (float("nan"), "finite"),
        (Decimal("Infinity"), "finite"),
    ],
)
def test_as_text_refuses_everything_else(raw, reason):
    assert reason in reason_of(as_text, raw, field="f").reason


def test_key_text_strips_and_applies_key_rules():
    assert key_text("  C-77 ", field="k") == "C-77"
    assert key_text(10**30, field="k") == "1" + "0" * 30
    assert key_text("   ", field="k") == ""
    assert reason_of(key_text, "a\tb", field="k").field == "k"
    assert "above the limit of 1024" in reason_of(key_text, "k" * 1025, field="k").reason
